"""Parameter policy of the PKCS#11 provider: every limit it enforces beyond the algorithms'
own definitions and the token's. The values match the software (openssl) provider's, so a
key behaves the same whichever provider runs it.
"""

from __future__ import annotations

GCM_IV_MIN = 8
"""Shortest AES-GCM IV accepted, in bytes: shorter IVs collide after few messages under one
key (the token would accept down to 1 byte)."""

GCM_IV_MAX = 128
"""Longest AES-GCM IV accepted, in bytes (longer IVs add nothing; GHASH folds them)."""

GCM_TAG_LENGTHS = frozenset({4, 8, 12, 13, 14, 15, 16})
"""AES-GCM tag lengths accepted, in bytes (NIST SP 800-38D section 5.2.1.2)."""

BLOCK_IV = 16
"""IV length of AES-CBC and counter block length of AES-CTR."""

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

RANDOM_MAX = 1 << 20
"""Most random bytes returned by one call."""

DEFAULT_STREAM_BUFFER = 64 * 1024
"""Default of the ``stream_buffer`` option: message bytes a hash, MAC or cipher operation
keeps in the provider before it starts a multi-part operation in the token. Below it a
whole message costs one round trip to the worker (at ``finalize``)."""
