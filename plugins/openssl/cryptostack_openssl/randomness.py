"""Random bytes for the OpenSSL provider: the operating system's CSPRNG (``os.urandom``),
which is also what OpenSSL seeds from; nothing is cached or reseeded here."""

from __future__ import annotations

import os

from cryptostack_core.sdk import invalid_argument

from . import policy


def random_bytes(length: int) -> bytes:
    """``length`` cryptographically secure random bytes (0 <= length <= policy.RANDOM_MAX)."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise invalid_argument(f"random length must be a non-negative integer, got {length!r}")
    if length > policy.RANDOM_MAX:
        raise invalid_argument(f"at most {policy.RANDOM_MAX} random bytes per call, "
                               f"asked for {length}")
    return os.urandom(length)
