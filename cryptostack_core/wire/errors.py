"""Error codes and the single exception type of the public API."""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """Why an operation failed. The value is the name sent on the wire."""

    KEY_OPERATION_NOT_PERMITTED = "KEY_OPERATION_NOT_PERMITTED"
    OPERATION_TIMED_OUT = "OPERATION_TIMED_OUT"
    CONTEXT_IN_ERROR_STATE = "CONTEXT_IN_ERROR_STATE"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    UNSUPPORTED_ALGORITHM = "UNSUPPORTED_ALGORITHM"
    NO_COMPATIBLE_PROVIDER = "NO_COMPATIBLE_PROVIDER"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    INVALID_STATE = "INVALID_STATE"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    ACCESS_DENIED = "ACCESS_DENIED"
    SLOT_EMPTY = "SLOT_EMPTY"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    CONNECTION_FAILED = "CONNECTION_FAILED"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    KEY_VERSION_RETIRED = "KEY_VERSION_RETIRED"
    """The key version asked for was retired, or is below its slot's minimum version."""
    KEYSTORE_UNAVAILABLE = "KEYSTORE_UNAVAILABLE"
    """The key store's database cannot be reached; keys already loaded keep working."""

    @classmethod
    def from_wire(cls, name: object) -> ErrorCode:
        """Map a wire name to a code; names from a newer daemon become PROTOCOL_ERROR."""
        try:
            return cls(name)
        except ValueError:
            return cls.PROTOCOL_ERROR


class CryptoError(Exception):
    """Every failure of the public API: an :class:`ErrorCode` plus a human message."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(f"{code.value}: {message}" if message else code.value)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[CryptoError], tuple[ErrorCode, str]]:
        return (type(self), (self.code, self.message))


def invalid_argument(message: str) -> CryptoError:
    """Shorthand used across providers for bad caller input."""
    return CryptoError(ErrorCode.INVALID_ARGUMENT, message)
