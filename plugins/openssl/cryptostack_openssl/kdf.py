"""HKDF (RFC 5869) key derivation into a new symmetric key."""

from __future__ import annotations

from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey, invalid_argument

from .hashing import hash_algorithm
from .keys import GENERATED_SECRET_LENGTHS, SECRET_LENGTHS, SecretKey, secret_key

KDFS: dict[str, tuple[str, int]] = {
    "HKDF-SHA-256": ("SHA-256", 32),
    "HKDF-SHA-384": ("SHA-384", 48),
    "HKDF-SHA-512": ("SHA-512", 64),
}
"""KDF algorithms: hash and digest length."""


def derive(
    algorithm: str,
    key: ProviderKey,
    *,
    length: int,
    salt: bytes,
    info: bytes,
    output_algorithm: str,
) -> SecretKey:
    """HKDF-Extract-and-Expand of ``key`` into ``length`` bytes of ``output_algorithm``.

    ``length`` 0 means the natural size of ``output_algorithm`` (its key length; 32 bytes for
    GENERIC-SECRET, the digest length for HMAC). An empty salt is HKDF's default salt.
    """
    entry = KDFS.get(algorithm)
    if entry is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider has no KDF {algorithm}"
        )
    hash_name, digest_length = entry
    if not isinstance(key, SecretKey):
        raise invalid_argument(f"{algorithm} derives from a symmetric key, not {key.algorithm}")
    if output_algorithm not in SECRET_LENGTHS:
        raise invalid_argument(f"{algorithm} derives symmetric keys; {output_algorithm} is not one")
    if length == 0:
        length = GENERATED_SECRET_LENGTHS.get(output_algorithm, SECRET_LENGTHS[output_algorithm][0])
    if not 0 < length <= 255 * digest_length:
        raise invalid_argument(
            f"{algorithm} output is 1 to {255 * digest_length} bytes, asked for {length}"
        )
    okm = HKDF(hash_algorithm(hash_name), length, bytes(salt) or None, bytes(info)).derive(
        key.secret
    )
    return secret_key(output_algorithm, okm)
