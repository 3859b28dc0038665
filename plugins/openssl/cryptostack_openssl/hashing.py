"""Message digests (SHA-2 and SHA-3) on pyca/cryptography's OpenSSL hashes."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from cryptostack_core.sdk import Buffer, CryptoError, ErrorCode, HashOperation

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA-224": hashes.SHA224,
    "SHA-256": hashes.SHA256,
    "SHA-384": hashes.SHA384,
    "SHA-512": hashes.SHA512,
    "SHA3-224": hashes.SHA3_224,
    "SHA3-256": hashes.SHA3_256,
    "SHA3-384": hashes.SHA3_384,
    "SHA3-512": hashes.SHA3_512,
}
"""Canonical hash names and their pyca classes."""


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """A pyca hash object for canonical ``name``."""
    cls = HASHES.get(name)
    if cls is None:
        raise CryptoError(ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider has no {name}")
    return cls()


class Digest(HashOperation):
    """One digest in progress."""

    __slots__ = ("_hash",)

    def __init__(self, algorithm: str) -> None:
        self._hash = hashes.Hash(hash_algorithm(algorithm))

    def update(self, data: Buffer) -> None:
        """Absorb ``data`` (memoryviews are read, not kept)."""
        self._hash.update(data)

    def finalize(self) -> bytes:
        """The digest."""
        return self._hash.finalize()
