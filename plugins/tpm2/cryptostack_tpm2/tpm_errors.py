"""TSS2/TPM response codes -> CryptoError, in the worker.

A response code carries a layer: 0 is the TPM itself; the TSS layers (ESAPI, SAPI, TCTI...)
report trouble on our side of the wire. Transport failures are *fatal* for a worker: its
ESAPI context may be half-way through a command, so the worker reports and exits and the
provider starts a fresh one.
"""

from __future__ import annotations

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import TPM2_RC

from cryptostack_core.sdk import CryptoError, ErrorCode

_LAYER_MASK = 0xFF << 16
_BASE_MASK = 0xFFFF
# TSS2_BASE_RC_* values that mean "bad input from us", not a broken connection.
_CALLER_ERRORS = frozenset({2, 5, 6, 11, 16, 21})  # NOT_IMPLEMENTED BAD_REFERENCE
# INSUFFICIENT_BUFFER BAD_VALUE BAD_SIZE NOT_SUPPORTED


def is_fatal(exc: TSS2_Exception) -> bool:
    """True when the failure is in the TSS stack or the transport, not a TPM answer."""
    rc = int(exc.rc)
    return bool(rc & _LAYER_MASK) and (rc & _BASE_MASK) not in _CALLER_ERRORS


def tpm_error(exc: TSS2_Exception) -> int:
    """The TPM error code without handle/parameter/session numbers (layer 0 only)."""
    return int(exc.error) if not int(exc.rc) & _LAYER_MASK else -1


_KEY_REFUSED = frozenset(int(c) for c in (TPM2_RC.ATTRIBUTES, TPM2_RC.KEY, TPM2_RC.TYPE, TPM2_RC.SCHEME))
_BAD_INPUT = frozenset(
    int(c)
    for c in (
        TPM2_RC.VALUE,
        TPM2_RC.SIZE,
        TPM2_RC.ECC_POINT,
        TPM2_RC.KEY_SIZE,
        TPM2_RC.CURVE,
        TPM2_RC.HASH,
        TPM2_RC.SYMMETRIC,
        TPM2_RC.MODE,
        TPM2_RC.ASYMMETRIC,
        TPM2_RC.KDF,
        TPM2_RC.BINDING,
        TPM2_RC.NO_RESULT,
    )
)


def translate(exc: TSS2_Exception, command: str) -> CryptoError:
    """A CryptoError with a clear message for a TPM answer to ``command``."""
    error = tpm_error(exc)
    text = f"TPM {command}: {exc} (rc 0x{int(exc.rc):x})"
    if error == int(TPM2_RC.LOCKOUT):
        return CryptoError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"{text}; the TPM is in dictionary-attack lockout "
            "(tpm2_dictionarylockout --clear-lockout, or wait)",
        )
    if error == int(TPM2_RC.INTEGRITY):
        return CryptoError(
            ErrorCode.ACCESS_DENIED,
            f"{text}; the key blob was made by another TPM or under another "
            "primary key (or the TPM's storage hierarchy was cleared)",
        )
    if error in (int(TPM2_RC.AUTH_FAIL), int(TPM2_RC.BAD_AUTH)):
        return CryptoError(ErrorCode.ACCESS_DENIED, f"{text}; wrong hierarchy or key auth value")
    if error == int(TPM2_RC.OBJECT_MEMORY):
        return CryptoError(ErrorCode.RESOURCE_EXHAUSTED, text)
    if error == int(TPM2_RC.TICKET):
        return CryptoError(
            ErrorCode.KEY_OPERATION_NOT_PERMITTED,
            f"{text}; a restricted key signs only digests of messages that do "
            "not start with TPM_GENERATED_VALUE (0xff544347)",
        )
    if error in _KEY_REFUSED:
        return CryptoError(ErrorCode.KEY_OPERATION_NOT_PERMITTED, text)
    if error in _BAD_INPUT:
        return CryptoError(ErrorCode.INVALID_ARGUMENT, text)
    if error == -1:
        return CryptoError(ErrorCode.PROVIDER_UNAVAILABLE, f"TPM not reachable: {text}")
    return CryptoError(ErrorCode.PROVIDER_ERROR, text)
