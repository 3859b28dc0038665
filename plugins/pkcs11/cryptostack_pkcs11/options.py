"""The provider's options (the ``options`` table of its ``[[providers]]`` entry).

=====================  ==========================================================  =========
option                 meaning                                                     default
=====================  ==========================================================  =========
``module``             path of the PKCS#11 module (``.so``)                        required
``token_label``        label of the token; slots are never used (SoftHSM           required
                       renumbers them)
``pin_file``           file holding the user PIN (relative to the config file)     one of
``pin_env``            environment variable holding the user PIN                   these two
``sessions``           requests the token worker runs at once, and idle sessions   4
                       kept open
``max_sessions``       most sessions open at once; multi-part operations (which    64
                       hold one between calls) may use ``max_sessions - sessions``
``stream_buffer``      bytes an operation buffers before streaming into the token  65536
``min_mac_length``     shortest truncated HMAC tag verification accepts            16
``exclude_mechanisms`` mechanisms to ignore (names like ``CKM_AES_GCM``)           []
``test_crash_at``      tests only: ``persist`` or ``delete``: the daemon kills     unset
                       itself (SIGKILL) right after copying a key to token
                       objects, or right before destroying them
=====================  ==========================================================  =========

plus the worker host's options (:class:`~cryptostack_core.sdk.workers.WorkerOptions`:
``call_timeout``, ``start_timeout``, ``degraded_seconds``, ``restart_backoff``,
``test_hang``), checked by :func:`~cryptostack_core.sdk.options.parse_options`.

The PIN never appears in the configuration: an option named ``pin`` is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk.options import OptionError, option, parse_options
from cryptostack_core.sdk.workers import WorkerOptions

from . import policy
from .mechanisms import parse_mechanism

_PIN_REFUSED = "the PIN must not be in the configuration; use pin_file or pin_env"


def _mechanisms(value: Any) -> frozenset[int]:
    if not isinstance(value, (list, tuple)):
        raise OptionError("exclude_mechanisms must be a list of mechanism names")
    try:
        return frozenset(parse_mechanism(m) for m in value)
    except ValueError as exc:
        raise OptionError(f"exclude_mechanisms: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class Options(WorkerOptions):
    """Validated provider options."""

    module: Path = option(doc="path of the PKCS#11 library")
    token_label: str = option(doc="tokens are found by label, never by slot")
    pin_file: Path | None = option(None, doc="file holding the user PIN")
    pin_env: str | None = option(None, doc="environment variable holding the user PIN")
    sessions: int = option(4, minimum=1, doc="requests run at once; idle sessions kept")
    max_sessions: int = option(64, minimum=1, doc="most sessions open at once")
    stream_buffer: int = option(
        policy.DEFAULT_STREAM_BUFFER, minimum=1, doc="bytes buffered before streaming into the token"
    )
    min_mac_length: int = option(
        policy.DEFAULT_MIN_MAC_LENGTH,
        minimum=policy.MIN_MAC_LENGTH_FLOOR,
        doc="shortest truncated HMAC tag verified",
    )
    exclude_mechanisms: frozenset[int] = option(frozenset(), parse=_mechanisms, doc="mechanisms to ignore")
    test_crash_at: str | None = option(
        None,
        choices=("persist", "delete"),
        doc="tests only: the daemon dies (SIGKILL) right after "
        "persisting token objects or before deleting them",
    )

    def __post_init__(self) -> None:
        if (self.pin_file is None) == (self.pin_env is None):
            raise OptionError("exactly one of pin_file and pin_env is required")
        if self.max_sessions < self.sessions:
            raise OptionError(
                f"max_sessions ({self.max_sessions}) must be at least sessions ({self.sessions})"
            )

    def read_pin(self) -> str:
        """The user PIN, read now from its file or environment variable."""
        if self.pin_file is not None:
            try:
                text = self.pin_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"cannot read the PIN file {self.pin_file}: {exc.strerror}",
                ) from None
            pin = text.rstrip("\r\n")
            where = f"PIN file {self.pin_file}"
        else:
            assert self.pin_env is not None
            value = os.environ.get(self.pin_env)
            if value is None:
                raise CryptoError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"the PIN variable {self.pin_env} is not set"
                )
            pin, where = value, f"PIN variable {self.pin_env}"
        if not pin:
            raise CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"the {where} is empty")
        return pin


def parse(raw: Mapping[str, Any], config_dir: Path) -> Options:
    """Check the options; INVALID_ARGUMENT naming the problem."""
    return parse_options(
        Options,
        raw,
        provider="pkcs11",
        config_dir=config_dir,
        refuse={"pin": _PIN_REFUSED, "user_pin": _PIN_REFUSED},
    )
