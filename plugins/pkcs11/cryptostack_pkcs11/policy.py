"""Parameter policy of the PKCS#11 provider: every limit it enforces beyond the algorithms'
own definitions and the token's. The values match the software (openssl) provider's, so a
key behaves the same whichever provider runs it. (IV, tag and random limits are declared on
the algorithm specs, :mod:`cryptostack_core.wire.algorithms`, and enforced by the daemon.)
"""

from __future__ import annotations

DEFAULT_MIN_MAC_LENGTH = 16
"""Default of the ``min_mac_length`` option: shortest truncated HMAC tag verification accepts."""

MIN_MAC_LENGTH_FLOOR = 10
"""``min_mac_length`` may not be set below this (RFC 2104 section 5: at least 80 bits)."""

HMAC_KEY_MIN = 16
"""Shortest HMAC key imported, in bytes."""

SECRET_KEY_MAX = 1024
"""Longest HMAC or GENERIC-SECRET key imported, in bytes."""

GENERIC_SECRET_GENERATED = 32
"""Length of a generated GENERIC-SECRET key."""

RSA_PUBLIC_EXPONENT = 65537
"""Public exponent of generated RSA keys."""


DEFAULT_STREAM_BUFFER = 64 * 1024
"""Default of the ``stream_buffer`` option: message bytes a hash, MAC or cipher operation
keeps in the provider before it starts a multi-part operation in the token. Below it a
whole message costs one round trip to the worker (at ``finalize``)."""
