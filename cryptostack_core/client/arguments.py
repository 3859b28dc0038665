"""Argument checks of the public client API.

Every public client method checks the types of its arguments before it does anything else
(no round trip, no state change), and answers a wrong one with ``CryptoError``
(``INVALID_ARGUMENT``) naming the argument and the type it got, never with a raw
``TypeError``/``ValueError`` from deeper down. The checks are strict where leniency would
hide a bug: ``bytes(5)`` is five zero bytes and ``int(2.9)`` is 2, so a number is not bytes
and a float or a bool is not an int.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TypeVar

from cryptostack_core.wire.errors import CryptoError, ErrorCode

_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")


def wrong_type(name: str, expected: str, value: object) -> CryptoError:
    """INVALID_ARGUMENT: ``name`` must be ``expected``, got the type of ``value``."""
    return CryptoError(ErrorCode.INVALID_ARGUMENT, f"{name} must be {expected}, got {type(value).__name__}")


def int_arg(value: object, name: str) -> int:
    """An int (not a bool, not a float, not a numeric string)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(name, "an int", value)
    return int(value)


def optional_int_arg(value: object, name: str) -> int | None:
    """None or an int."""
    return None if value is None else int_arg(value, name)


def str_arg(value: object, name: str) -> str:
    """A str."""
    if not isinstance(value, str):
        raise wrong_type(name, "a str", value)
    return value


def bool_arg(value: object, name: str) -> bool:
    """A bool (``0``/``1``/``"yes"`` are not)."""
    if not isinstance(value, bool):
        raise wrong_type(name, "a bool", value)
    return value


def bytes_arg(value: object, name: str) -> bytes:
    """A copy of a bytes-like argument (bytes, bytearray, memoryview)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise wrong_type(name, "bytes-like (bytes, bytearray or memoryview)", value)
    return bytes(value)


def enum_arg(value: object, enum_type: type[_E], name: str) -> _E:
    """A member of ``enum_type``, given as the member or its value (``"ENCRYPT"``).

    An int is accepted for an ``IntFlag`` (permissions are bit sets)."""
    if isinstance(value, enum_type):
        return value
    flag = issubclass(enum_type, enum.IntFlag)
    if isinstance(value, str) or (flag and isinstance(value, int) and not isinstance(value, bool)):
        try:
            return enum_type(value)
        except ValueError:
            pass
    choices = ", ".join(str(m.name) for m in enum_type)
    raise CryptoError(
        ErrorCode.INVALID_ARGUMENT,
        f"{name} must be a {enum_type.__name__} ({choices}), got {type(value).__name__} {value!r}",
    )


def instance_arg(value: object, cls: type[_T], name: str) -> _T:
    """An instance of ``cls`` (a config or parameter object)."""
    if not isinstance(value, cls):
        raise wrong_type(name, f"a {cls.__name__}", value)
    return value


def str_list_arg(value: object, name: str) -> list[str]:
    """A list of strs from any iterable of them (a lone str is refused: it is one by one
    letters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise wrong_type(name, "an iterable of str", value)
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise wrong_type(f"each item of {name}", "a str", item)
    return items


def components_arg(value: object, name: str) -> dict[str, list[int]]:
    """Per role of a hybrid key (``pq``, ``classical``), a provider id or a list of them;
    roles and ids themselves are checked by the daemon."""
    if not isinstance(value, Mapping):
        raise wrong_type(name, "a mapping of role to provider ids", value)
    out: dict[str, list[int]] = {}
    for role, ids in value.items():
        items = ids if isinstance(ids, list) else [ids]
        out[str_arg(role, f"each role of {name}")] = [
            int_arg(i, f"each provider id of {name}[{role!r}]") for i in items
        ]
    return out
