"""PKCS#11 failures: naming them in the worker, turning them into CryptoErrors in the provider.

The worker reports every failure as ``(kind, name, message)`` (see
:mod:`cryptostack_core.sdk.workers.wire`); the provider maps ``CKR_*`` names to
:class:`~cryptostack_core.wire.errors.ErrorCode` here, with the context of the call where the same
return value means different things (a failed AES-GCM decryption is a bad tag; SoftHSM
reports it as ``CKR_GENERAL_ERROR``).
"""

from __future__ import annotations

import re

from cryptostack_core.sdk import CryptoError, ErrorCode

from .cryptoki import CKR_NAMES, CKRError

# python-pkcs11 raises one exception class per return value; the class names are stable.
_PYTHON_PKCS11_CLASSES: dict[str, str] = {
    "AnotherUserAlreadyLoggedIn": "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
    "ArgumentsBad": "CKR_ARGUMENTS_BAD",
    "AttributeReadOnly": "CKR_ATTRIBUTE_READ_ONLY",
    "AttributeSensitive": "CKR_ATTRIBUTE_SENSITIVE",
    "AttributeTypeInvalid": "CKR_ATTRIBUTE_TYPE_INVALID",
    "AttributeValueInvalid": "CKR_ATTRIBUTE_VALUE_INVALID",
    "DataInvalid": "CKR_DATA_INVALID",
    "DataLenRange": "CKR_DATA_LEN_RANGE",
    "DeviceError": "CKR_DEVICE_ERROR",
    "DeviceMemory": "CKR_DEVICE_MEMORY",
    "DeviceRemoved": "CKR_DEVICE_REMOVED",
    "DomainParamsInvalid": "CKR_DOMAIN_PARAMS_INVALID",
    "EncryptedDataInvalid": "CKR_ENCRYPTED_DATA_INVALID",
    "EncryptedDataLenRange": "CKR_ENCRYPTED_DATA_LEN_RANGE",
    "FunctionFailed": "CKR_FUNCTION_FAILED",
    "FunctionNotSupported": "CKR_FUNCTION_NOT_SUPPORTED",
    "GeneralError": "CKR_GENERAL_ERROR",
    "HostMemory": "CKR_HOST_MEMORY",
    "KeyHandleInvalid": "CKR_KEY_HANDLE_INVALID",
    "KeyNotWrappable": "CKR_KEY_NOT_WRAPPABLE",
    "KeySizeRange": "CKR_KEY_SIZE_RANGE",
    "KeyTypeInconsistent": "CKR_KEY_TYPE_INCONSISTENT",
    "KeyUnextractable": "CKR_KEY_UNEXTRACTABLE",
    "MechanismInvalid": "CKR_MECHANISM_INVALID",
    "MechanismParamInvalid": "CKR_MECHANISM_PARAM_INVALID",
    "ObjectHandleInvalid": "CKR_OBJECT_HANDLE_INVALID",
    "OperationActive": "CKR_OPERATION_ACTIVE",
    "PinIncorrect": "CKR_PIN_INCORRECT",
    "PinLocked": "CKR_PIN_LOCKED",
    "PinExpired": "CKR_PIN_EXPIRED",
    "SessionCount": "CKR_SESSION_COUNT",
    "SessionHandleInvalid": "CKR_SESSION_HANDLE_INVALID",
    "SessionClosed": "CKR_SESSION_CLOSED",
    "SignatureInvalid": "CKR_SIGNATURE_INVALID",
    "SignatureLenRange": "CKR_SIGNATURE_LEN_RANGE",
    "TemplateIncomplete": "CKR_TEMPLATE_INCOMPLETE",
    "TemplateInconsistent": "CKR_TEMPLATE_INCONSISTENT",
    "TokenNotPresent": "CKR_TOKEN_NOT_PRESENT",
    "TokenNotRecognised": "CKR_TOKEN_NOT_RECOGNIZED",
    "UserNotLoggedIn": "CKR_USER_NOT_LOGGED_IN",
    "UserPinNotInitialized": "CKR_USER_PIN_NOT_INITIALIZED",
    "WrappedKeyInvalid": "CKR_WRAPPED_KEY_INVALID",
    "WrappedKeyLenRange": "CKR_WRAPPED_KEY_LEN_RANGE",
}


class WorkerError(Exception):
    """A failure the worker reports with an ErrorCode name rather than a CKR value."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def describe_failure(exc: BaseException) -> tuple[str, str, str]:
    """``(kind, name, message)`` for an exception raised in the worker."""
    if isinstance(exc, CKRError):
        return "ckr", exc.name, str(exc)
    if isinstance(exc, WorkerError):
        return "crypto", exc.code.value, exc.message
    if isinstance(exc, CryptoError):
        return "crypto", exc.code.value, exc.message
    cls = type(exc)
    if cls.__module__.startswith("pkcs11"):
        name = _PYTHON_PKCS11_CLASSES.get(cls.__name__)
        if name is None:
            # "Unmapped error code 0x68" and the like
            found = re.search(r"0x([0-9a-fA-F]+)", str(exc))
            if found:
                rv = int(found.group(1), 16)
                name = CKR_NAMES.get(rv, f"CKR_0x{rv:X}")
        if name is not None:
            return "ckr", name, f"{cls.__name__}: {exc}" if str(exc) else name
    return "crypto", ErrorCode.PROVIDER_ERROR.value, f"{cls.__name__}: {exc}"


_CKR_CODES: dict[str, ErrorCode] = {
    "CKR_KEY_FUNCTION_NOT_PERMITTED": ErrorCode.KEY_OPERATION_NOT_PERMITTED,
    "CKR_KEY_UNEXTRACTABLE": ErrorCode.KEY_OPERATION_NOT_PERMITTED,
    "CKR_KEY_NOT_WRAPPABLE": ErrorCode.KEY_OPERATION_NOT_PERMITTED,
    "CKR_ACTION_PROHIBITED": ErrorCode.KEY_OPERATION_NOT_PERMITTED,
    "CKR_MECHANISM_INVALID": ErrorCode.UNSUPPORTED_ALGORITHM,
    "CKR_FUNCTION_NOT_SUPPORTED": ErrorCode.UNSUPPORTED_ALGORITHM,
    "CKR_MECHANISM_PARAM_INVALID": ErrorCode.INVALID_ARGUMENT,
    "CKR_ARGUMENTS_BAD": ErrorCode.INVALID_ARGUMENT,
    "CKR_DATA_INVALID": ErrorCode.INVALID_ARGUMENT,
    "CKR_DATA_LEN_RANGE": ErrorCode.INVALID_ARGUMENT,
    "CKR_ENCRYPTED_DATA_INVALID": ErrorCode.INVALID_ARGUMENT,
    "CKR_ENCRYPTED_DATA_LEN_RANGE": ErrorCode.INVALID_ARGUMENT,
    "CKR_KEY_SIZE_RANGE": ErrorCode.INVALID_ARGUMENT,
    "CKR_KEY_TYPE_INCONSISTENT": ErrorCode.INVALID_ARGUMENT,
    "CKR_ATTRIBUTE_VALUE_INVALID": ErrorCode.INVALID_ARGUMENT,
    "CKR_TEMPLATE_INCONSISTENT": ErrorCode.INVALID_ARGUMENT,
    "CKR_TEMPLATE_INCOMPLETE": ErrorCode.INVALID_ARGUMENT,
    "CKR_DOMAIN_PARAMS_INVALID": ErrorCode.INVALID_ARGUMENT,
    "CKR_WRAPPED_KEY_INVALID": ErrorCode.INVALID_ARGUMENT,
    "CKR_WRAPPED_KEY_LEN_RANGE": ErrorCode.INVALID_ARGUMENT,
    "CKR_OBJECT_HANDLE_INVALID": ErrorCode.RESOURCE_NOT_FOUND,
    "CKR_KEY_HANDLE_INVALID": ErrorCode.RESOURCE_NOT_FOUND,
    "CKR_HOST_MEMORY": ErrorCode.RESOURCE_EXHAUSTED,
    "CKR_DEVICE_MEMORY": ErrorCode.RESOURCE_EXHAUSTED,
    "CKR_SESSION_COUNT": ErrorCode.RESOURCE_EXHAUSTED,
    "CKR_PIN_INCORRECT": ErrorCode.ACCESS_DENIED,
    "CKR_PIN_LOCKED": ErrorCode.ACCESS_DENIED,
    "CKR_PIN_EXPIRED": ErrorCode.ACCESS_DENIED,
    "CKR_USER_NOT_LOGGED_IN": ErrorCode.ACCESS_DENIED,
    "CKR_TOKEN_NOT_PRESENT": ErrorCode.PROVIDER_UNAVAILABLE,
    "CKR_DEVICE_REMOVED": ErrorCode.PROVIDER_UNAVAILABLE,
}

WORKER_FATAL = frozenset(
    {
        "CKR_DEVICE_ERROR",
        "CKR_DEVICE_REMOVED",
        "CKR_TOKEN_NOT_PRESENT",
        "CKR_CRYPTOKI_NOT_INITIALIZED",
        "CKR_USER_NOT_LOGGED_IN",
        "CKR_SESSION_HANDLE_INVALID",
        "CKR_SESSION_CLOSED",
    }
)
"""Return values after which the worker's module state cannot be trusted: the provider
restarts it (new sessions, new login)."""


def to_crypto_error(
    info: tuple[str, str, str], *, what: str, overrides: dict[str, ErrorCode] | None = None
) -> CryptoError:
    """Turn a worker failure into a CryptoError; ``what`` names the call for the message,
    ``overrides`` gives call-specific meanings of CKR values."""
    kind, name, message = info
    if kind == "crypto":
        return CryptoError(ErrorCode.from_wire(name), message)
    code = (overrides or {}).get(name) or _CKR_CODES.get(name, ErrorCode.PROVIDER_ERROR)
    return CryptoError(code, f"{what}: the token returned {name} ({message})")
