"""Parameter policy of the OpenSSL provider: every limit it enforces beyond the algorithms'
own definitions, in one place so the provider docstring, the code and the tests agree.

The reasons are given next to each value; :mod:`cryptostack_openssl.provider` summarises them.
"""

from __future__ import annotations

GCM_IV_MIN = 8
"""Shortest AES-GCM IV accepted, in bytes. Shorter IVs collide after few messages under one
key; pyca/cryptography refuses them too."""

GCM_IV_MAX = 128
"""Longest AES-GCM IV accepted, in bytes (pyca's limit; longer IVs add nothing, they are
hashed down to 16 bytes)."""

GCM_TAG_LENGTHS = frozenset({4, 8, 12, 13, 14, 15, 16})
"""AES-GCM tag lengths accepted, in bytes: exactly the lengths NIST SP 800-38D section 5.2.1.2
allows (4 and 8 only for special applications, which is the caller's responsibility)."""

CHACHA20_POLY1305_NONCE = 12
"""ChaCha20-Poly1305 nonce length (RFC 8439); other lengths are refused."""

CHACHA20_POLY1305_TAG = 16
"""ChaCha20-Poly1305 tag length; RFC 8439 defines no truncation."""

BLOCK_IV = 16
"""IV length of AES-CBC and initial counter block length of AES-CTR."""

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

MLDSA_CONTEXT_MAX = 255
"""Longest ML-DSA context string (FIPS 204)."""

RANDOM_MAX = 1 << 20
"""Most random bytes returned by one call."""

INLINE_BYTES = 8 * 1024
"""Largest input of a hash, cipher or HMAC call run on the daemon's event loop. Measured on the
reference machine: SHA3-512 (the slowest) is ~30 us and AES-CBC ~15 us for 8 KiB."""
