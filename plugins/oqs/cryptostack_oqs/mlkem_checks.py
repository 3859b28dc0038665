"""FIPS 203 input checks for ML-KEM keys, done at import time.

* Encapsulation key (section 7.2): the right length, and every 12-bit coefficient of
  ``t_hat`` below q = 3329 (``ByteEncode12(ByteDecode12(ek)) == ek``).
* Decapsulation key (section 7.3): the right length, its embedded encapsulation key passes
  the check above, and its stored ``H(ek)`` equals SHA3-256 of that key.

liboqs also checks the encapsulation key when encapsulating, but a key should be refused
when it enters the daemon, not at first use.
"""

from __future__ import annotations

import hashlib

Q = 3329
K_BY_ALGORITHM = {"ML-KEM-512": 2, "ML-KEM-768": 3, "ML-KEM-1024": 4}


class InvalidKemKey(ValueError):
    """An ML-KEM key that fails a FIPS 203 input check."""


def encapsulation_key_size(k: int) -> int:
    """384k + 32."""
    return 384 * k + 32


def decapsulation_key_size(k: int) -> int:
    """768k + 96."""
    return 768 * k + 96


def check_encapsulation_key(algorithm: str, ek: bytes) -> None:
    """Raise :class:`InvalidKemKey` unless ``ek`` passes the FIPS 203 7.2 checks."""
    k = K_BY_ALGORITHM[algorithm]
    if len(ek) != encapsulation_key_size(k):
        raise InvalidKemKey(
            f"{algorithm} encapsulation keys are {encapsulation_key_size(k)} bytes, got {len(ek)}"
        )
    encoded = ek[: 384 * k]
    for pos in range(0, len(encoded), 3):
        b0, b1, b2 = encoded[pos], encoded[pos + 1], encoded[pos + 2]
        if (b0 | (b1 & 0x0F) << 8) >= Q or (b1 >> 4 | b2 << 4) >= Q:
            raise InvalidKemKey(
                f"{algorithm} encapsulation key fails the modulus check "
                "(a coefficient is not reduced modulo 3329)"
            )


def check_decapsulation_key(algorithm: str, dk: bytes) -> bytes:
    """Check ``dk`` (FIPS 203 7.3) and return the encapsulation key inside it."""
    k = K_BY_ALGORITHM[algorithm]
    if len(dk) != decapsulation_key_size(k):
        raise InvalidKemKey(
            f"{algorithm} decapsulation keys are {decapsulation_key_size(k)} bytes, got {len(dk)}"
        )
    ek = dk[384 * k : 768 * k + 32]
    check_encapsulation_key(algorithm, ek)
    if hashlib.sha3_256(ek).digest() != dk[768 * k + 32 : 768 * k + 64]:
        raise InvalidKemKey(
            f"{algorithm} decapsulation key fails the hash check (H(ek) does not match its encapsulation key)"
        )
    return ek
