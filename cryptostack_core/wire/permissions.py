"""Key-operation permissions: what a key may be used for."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class KeyOperationPermission(enum.IntFlag):
    """Operations a key allows. Checked by the daemon when a context is created."""

    NONE = 0
    ENCRYPT = 1 << 0
    DECRYPT = 1 << 1
    SIGN = 1 << 2
    VERIFY = 1 << 3
    MAC = 1 << 4
    AGREE = 1 << 5
    WRAP = 1 << 6
    UNWRAP = 1 << 7
    DERIVE = 1 << 8
    ENCAPSULATE = 1 << 9
    DECAPSULATE = 1 << 10
    EXPORT = 1 << 11
    # Composite preset from the design: sign, verify, MAC and agree; never encrypt or wrap.
    AUTHENTICATION = SIGN | VERIFY | MAC | AGREE


def has_permission(perms: KeyOperationPermission | int, wanted: KeyOperationPermission) -> bool:
    """True when ``perms`` includes every bit of ``wanted``."""
    wanted_bits = int(wanted)
    return wanted_bits != 0 and (int(perms) & wanted_bits) == wanted_bits


def permission_names(perms: KeyOperationPermission | int) -> list[str]:
    """Lower-case names of the single permissions in ``perms`` (config and status form)."""
    return [
        p.name.lower()
        for p in KeyOperationPermission
        if p.name
        and p not in (KeyOperationPermission.NONE, KeyOperationPermission.AUTHENTICATION)
        and int(perms) & int(p)
    ]


def parse_permissions(names: Iterable[str]) -> KeyOperationPermission:
    """Parse config names such as ``["encrypt", "decrypt"]`` (``authentication`` allowed)."""
    result = KeyOperationPermission.NONE
    for name in names:
        try:
            result |= KeyOperationPermission[str(name).upper()]
        except KeyError:
            raise ValueError(f"unknown permission {name!r}") from None
    return result
