"""Random bytes for the OpenSSL provider: the operating system's CSPRNG (``os.urandom``),
which is also what OpenSSL seeds from; nothing is cached or reseeded here."""

from __future__ import annotations

import os

from cryptostack_core.sdk import REGISTRY, invalid_argument


def random_bytes(length: int) -> bytes:
    """``length`` cryptographically secure random bytes (at most the RANDOM algorithm's
    ``max_output`` per call)."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise invalid_argument(f"random length must be a non-negative integer, got {length!r}")
    most = REGISTRY.get("RANDOM").max_output
    if length > most:
        raise invalid_argument(f"at most {most} random bytes per call, asked for {length}")
    return os.urandom(length)
