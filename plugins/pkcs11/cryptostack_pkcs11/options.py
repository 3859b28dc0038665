"""The provider's options (the ``options`` table of its ``[[providers]]`` entry).

=====================  ==========================================================  =========
option                 meaning                                                     default
=====================  ==========================================================  =========
``module``             path of the PKCS#11 module (``.so``)                        required
``token_label``        label of the token; slots are never used (SoftHSM           required
                       renumbers them)
``pin_file``           file holding the user PIN (relative to the config file)     one of
``pin_env``            environment variable holding the user PIN                   these two
``sessions``           worker channels (parallel calls) and idle sessions kept     4
``max_sessions``       most sessions open at once; multi-part operations (which    64
                       hold one between calls) may use ``max_sessions - sessions``
``call_timeout``       seconds a single token call may run before the worker is    30
                       declared stuck, killed and restarted; also the wait when
                       the daemon sets no deadline
``start_timeout``      seconds the worker may take to load the module and log in   20
``stream_buffer``      bytes an operation buffers before streaming into the token  65536
``min_mac_length``     shortest truncated HMAC tag verification accepts            16
``degraded_seconds``   how long the provider reports DEGRADED after a restart      10
``spin_microseconds``  how long a lone caller polls for the worker's reply before  100
                       sleeping on it (0: never; saves the wake-up latency)
``exclude_mechanisms`` mechanisms to ignore (names like ``CKM_AES_GCM``)           []
``test_hang``          tests only: ``{op, seconds, times}`` makes the worker       unset
                       block in the next ``times`` requests named ``op``
=====================  ==========================================================  =========

The PIN never appears in the configuration: an option named ``pin`` is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode

from . import policy
from .mechanisms import parse_mechanism
from .supervisor import HangHook


def _bad(message: str) -> CryptoError:
    return CryptoError(ErrorCode.INVALID_ARGUMENT, f"pkcs11 provider options: {message}")


@dataclass(frozen=True)
class Options:
    """Validated provider options."""

    module: str
    token_label: str
    pin_file: Path | None
    pin_env: str | None
    sessions: int
    max_sessions: int
    call_timeout: float
    start_timeout: float
    stream_buffer: int
    min_mac_length: int
    degraded_seconds: float
    spin_microseconds: int
    exclude_mechanisms: frozenset[int]
    test_hang: HangHook | None

    def read_pin(self) -> str:
        """The user PIN, read now from its file or environment variable."""
        if self.pin_file is not None:
            try:
                text = self.pin_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                                  f"cannot read the PIN file {self.pin_file}: "
                                  f"{exc.strerror}") from None
            pin = text.rstrip("\r\n")
            where = f"PIN file {self.pin_file}"
        else:
            assert self.pin_env is not None
            value = os.environ.get(self.pin_env)
            if value is None:
                raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE,
                                  f"the PIN variable {self.pin_env} is not set")
            pin, where = value, f"PIN variable {self.pin_env}"
        if not pin:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"the {where} is empty")
        return pin


def _int(raw: Mapping[str, Any], name: str, default: int, low: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _seconds(raw: Mapping[str, Any], name: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _bad(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


_KNOWN = {"module", "token_label", "pin_file", "pin_env", "sessions", "max_sessions",
          "call_timeout", "start_timeout", "stream_buffer", "min_mac_length",
          "degraded_seconds", "spin_microseconds", "exclude_mechanisms", "test_hang"}


def parse_options(raw: Mapping[str, Any], config_dir: Path) -> Options:
    """Check the options; INVALID_ARGUMENT naming the problem."""
    if "pin" in raw or "user_pin" in raw:
        raise _bad("the PIN must not be in the configuration; use pin_file or pin_env")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise _bad(f"unknown option(s) {', '.join(unknown)}")
    module = raw.get("module")
    if not isinstance(module, str) or not module:
        raise _bad("module (path of the PKCS#11 library) is required")
    module_path = Path(module)
    if not module_path.is_absolute():
        module_path = config_dir / module_path
    label = raw.get("token_label")
    if not isinstance(label, str) or not label:
        raise _bad("token_label is required (tokens are found by label, never by slot)")
    pin_file, pin_env = raw.get("pin_file"), raw.get("pin_env")
    if (pin_file is None) == (pin_env is None):
        raise _bad("exactly one of pin_file and pin_env is required")
    if pin_file is not None and (not isinstance(pin_file, str) or not pin_file):
        raise _bad("pin_file must be a path")
    if pin_env is not None and (not isinstance(pin_env, str) or not pin_env):
        raise _bad("pin_env must be an environment variable name")
    sessions = _int(raw, "sessions", 4, 1)
    min_mac = _int(raw, "min_mac_length", policy.DEFAULT_MIN_MAC_LENGTH,
                   policy.MIN_MAC_LENGTH_FLOOR)
    excluded = raw.get("exclude_mechanisms", [])
    if not isinstance(excluded, (list, tuple)):
        raise _bad("exclude_mechanisms must be a list of mechanism names")
    try:
        exclude = frozenset(parse_mechanism(m) for m in excluded)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    return Options(
        module=str(module_path),
        token_label=label,
        pin_file=(config_dir / pin_file) if isinstance(pin_file, str) else None,
        pin_env=pin_env if isinstance(pin_env, str) else None,
        sessions=sessions,
        max_sessions=_int(raw, "max_sessions", 64, sessions),
        call_timeout=_seconds(raw, "call_timeout", 30.0),
        start_timeout=_seconds(raw, "start_timeout", 20.0),
        stream_buffer=_int(raw, "stream_buffer", policy.DEFAULT_STREAM_BUFFER, 1),
        min_mac_length=min_mac,
        degraded_seconds=_seconds(raw, "degraded_seconds", 10.0),
        spin_microseconds=_int(raw, "spin_microseconds", 100, 0),
        exclude_mechanisms=exclude,
        test_hang=_hang(raw.get("test_hang")),
    )


def _hang(value: Any) -> HangHook | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("op"), str):
        raise _bad("test_hang must be a table {op = \"...\", seconds = N, times = N}")
    seconds = value.get("seconds", 3600)
    times = value.get("times", 1)
    if not isinstance(seconds, (int, float)) or not isinstance(times, int):
        raise _bad("test_hang seconds and times must be numbers")
    return HangHook(op=value["op"], seconds=float(seconds), times=times)
