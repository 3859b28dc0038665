"""The provider's options (``[[providers]] options = { ... }``; relative paths are relative
to the config file's directory).

============================  ==================================================  ==============
option                        meaning                                             default
============================  ==================================================  ==============
``tcti``                      tpm2-tools style TCTI string, e.g.                  ``device:/dev/
                              ``swtpm:host=127.0.0.1,port=2321``                  tpmrm0``
``owner_auth_file``           file holding the owner hierarchy's auth value       unset
``lockout_auth_file``         file holding the lockout hierarchy's auth value     unset
``primary_template``          storage primary key: ``ecc`` or ``rsa`` (TCG SRK    ``ecc``
                              templates) or a tpm2-tools algorithm specifier
``primary_handle``            use an existing persistent primary (0x81000001)     unset
``max_loaded_objects``        transient objects kept loaded                       TPM_PT_HR_
                                                                                  TRANSIENT_MIN
``flush_transient_on_start``  flush objects a killed worker left behind (right    true
                              for a TPM used by this daemon alone or through
                              the kernel resource manager)
``reset_lockout``             TPM2_DictionaryAttackLockReset at start             false
``min_mac_length``            shortest truncated HMAC tag verified (>= 10)        16
============================  ==================================================  ==============

plus the worker host's options (:class:`~cryptostack_core.sdk.workers.WorkerOptions`:
``call_timeout``, ``start_timeout`` (30 s here: a TPM may be slow to answer its first
command), ``degraded_seconds``, ``restart_backoff``, ``test_hang``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk.options import OptionError, option, parse_options
from cryptostack_core.sdk.workers import WorkerOptions

from .worker import WorkerConfig

MIN_MAC_LENGTH_FLOOR = 10
"""``min_mac_length`` may not be set below this (RFC 2104 section 5: at least 80 bits)."""


def _handle(value: Any) -> int:
    try:
        handle = int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise OptionError("primary_handle must be a handle like 0x81000001") from None
    if isinstance(value, bool) or handle >> 24 != 0x81:
        raise OptionError(f"primary_handle: 0x{handle:08x} is not a persistent handle")
    return handle


@dataclass(frozen=True, kw_only=True)
class TpmOptions(WorkerOptions):
    """Validated provider options."""

    start_timeout: float = option(30.0, positive=True, doc="seconds a worker may take to start")
    tcti: str = option("device:/dev/tpmrm0", doc="TCTI string of the TPM")
    owner_auth_file: Path | None = option(None, doc="file with the owner auth value")
    lockout_auth_file: Path | None = option(None, doc="file with the lockout auth value")
    primary_template: str = option("ecc", doc="storage primary key template")
    primary_handle: int | None = option(None, parse=_handle, doc="persistent primary handle")
    max_loaded_objects: int | None = option(None, minimum=1, doc="transient objects kept loaded")
    flush_transient_on_start: bool = option(True, doc="flush leftover transient objects")
    reset_lockout: bool = option(False, doc="reset the dictionary-attack lockout at start")
    min_mac_length: int = option(16, minimum=MIN_MAC_LENGTH_FLOOR, doc="shortest truncated HMAC tag verified")

    def worker_config(self) -> WorkerConfig:
        """What a worker needs to connect (auth values read now)."""
        return WorkerConfig(
            tcti=self.tcti,
            primary_template=self.primary_template,
            primary_handle=self.primary_handle,
            owner_auth=_read(self.owner_auth_file, "owner_auth_file"),
            lockout_auth=_read(self.lockout_auth_file, "lockout_auth_file"),
            reset_lockout=self.reset_lockout,
            flush_transient=self.flush_transient_on_start,
            max_loaded=self.max_loaded_objects,
        )


def _read(path: Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise CryptoError(
            ErrorCode.PROVIDER_UNAVAILABLE, f"tpm2 option {name}: cannot read {path}: {exc}"
        ) from None


def parse(raw: Mapping[str, Any], config_dir: Path) -> TpmOptions:
    """Check the options; INVALID_ARGUMENT naming the problem."""
    return parse_options(TpmOptions, raw, provider="tpm2", config_dir=config_dir)
