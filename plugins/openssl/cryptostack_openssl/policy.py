"""Parameter policy of the OpenSSL provider: every limit it enforces beyond the algorithms'
own definitions, in one place so the provider docstring, the code and the tests agree.
(IV, tag, context-string and random limits are declared on the algorithm specs, in
:mod:`cryptostack_core.wire.algorithms`, and enforced by the daemon for every provider.)

The reasons are given next to each value; :mod:`cryptostack_openssl.provider` summarises them.
"""

from __future__ import annotations

DEFAULT_MIN_MAC_LENGTH = 16
"""Default of the ``min_mac_length`` provider option: the shortest truncated HMAC tag that
verification accepts (a prefix of the full MAC, compared in constant time)."""

MIN_MAC_LENGTH_FLOOR = 10
"""``min_mac_length`` may not be set below this (RFC 2104 section 5: at least 80 bits)."""

HMAC_KEY_MIN = 16
"""Shortest HMAC key imported, in bytes: below 128 bits the key, not the hash, bounds the
security of the MAC."""

SECRET_KEY_MAX = 1024
"""Longest HMAC or GENERIC-SECRET key imported, in bytes (longer keys are hashed by HMAC
anyway; the bound keeps garbage input from being accepted as a key)."""

GENERIC_SECRET_MIN = 1
"""Shortest GENERIC-SECRET imported (key-agreement and KEM outputs, HKDF input keys)."""

GENERIC_SECRET_GENERATED = 32
"""Length of a generated GENERIC-SECRET key."""

RSA_PUBLIC_EXPONENT = 65537
"""Public exponent of generated RSA keys (imported keys may use any exponent pyca accepts)."""


INLINE_BYTES = 8 * 1024
"""Largest input of a hash, cipher or HMAC call run on the daemon's event loop. Measured on the
reference machine: SHA3-512 (the slowest) is ~30 us and AES-CBC ~15 us for 8 KiB."""
