"""Checking request arguments: every type and range error becomes INVALID_ARGUMENT with a
message naming the argument, before any provider sees the request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptostack_core.wire.algorithms import REGISTRY, AlgorithmSpec
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission as P
from cryptostack_core.wire.protocol import rid_from_wire
from cryptostack_core.wire.resources import CryptoResourceId


def invalid(message: str) -> CryptoError:
    """An INVALID_ARGUMENT error."""
    return CryptoError(ErrorCode.INVALID_ARGUMENT, message)


def arg(
    args: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    default: Any = ...,
    allow_none: bool = False,
) -> Any:
    """``args[name]`` checked against ``kind``; ``default`` when absent (required if not given)."""
    if name not in args or (args[name] is None and default is not ...):
        if default is ...:
            raise invalid(f"missing argument {name!r}")
        return default
    value = args[name]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) and kind in (int, (int,)):
        raise invalid(f"argument {name!r} must be an integer, got a boolean")
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise invalid(f"argument {name!r} must be {want}, got {type(value).__name__}")
    return value


def data_arg(args: Mapping[str, Any], name: str = "data") -> bytes | memoryview:
    """A bytes-like argument (bytearrays are copied; memoryviews may be shared memory)."""
    value = args.get(name)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value if not isinstance(value, bytearray) else bytes(value)
    if value is None and name not in args:
        raise invalid(f"missing argument {name!r}")
    raise invalid(f"argument {name!r} must be bytes, got {type(value).__name__}")


def int_arg(
    args: Mapping[str, Any], name: str, default: Any = ..., lo: int = 0, hi: int | None = None
) -> Any:
    """An integer argument within ``lo``..``hi``."""
    value = arg(args, name, int, default=default)
    if value is None:
        return None
    if value < lo or (hi is not None and value > hi):
        raise invalid(f"argument {name!r} out of range: {value}")
    return value


def algorithm_arg(args: Mapping[str, Any], name: str = "algorithm") -> AlgorithmSpec:
    """An algorithm name resolved in the registry."""
    value = arg(args, name, str)
    return REGISTRY.get(value)


def permissions_arg(args: Mapping[str, Any], name: str = "permissions") -> P | None:
    """A permission bit set (None when absent); unknown bits are refused."""
    value = arg(args, name, int, default=None)
    if value is None:
        return None
    if value < 0 or value & ~int(
        P.AUTHENTICATION
        | P.ENCRYPT
        | P.DECRYPT
        | P.WRAP
        | P.UNWRAP
        | P.DERIVE
        | P.ENCAPSULATE
        | P.DECAPSULATE
        | P.EXPORT
    ):
        raise invalid(f"unknown permission bits in {value:#x}")
    return P(value)


def enum_arg(args: Mapping[str, Any], name: str, enum_type: Any, default: Any = ...) -> Any:
    """An enum member given by its value."""
    value = arg(args, name, str, default=default)
    if not isinstance(value, str):
        return value
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_type)
        raise invalid(f"argument {name!r}: {value!r} is not one of {choices}") from None


def rid_arg(args: Mapping[str, Any], name: str) -> CryptoResourceId:
    """A resource id argument."""
    if name not in args:
        raise invalid(f"missing argument {name!r}")
    return rid_from_wire(args[name])
