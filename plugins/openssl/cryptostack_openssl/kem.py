"""ML-KEM (FIPS 203) encapsulation and decapsulation; the 32-byte shared secret becomes a
GENERIC-SECRET key. Encapsulation keys were checked at import (length and the modulus check
of FIPS 203 section 7.2, both done by OpenSSL); a ciphertext of the wrong length is refused
with INVALID_ARGUMENT, while a well-formed but wrong one yields the implicit-rejection secret,
as FIPS 203 specifies."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mlkem

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey, invalid_argument

from .keys import AsymmetricKey, SecretKey

KEMS: dict[str, tuple[type, type, int]] = {
    "ML-KEM-768": (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 1088),
    "ML-KEM-1024": (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 1568),
}
"""KEM algorithms: private class, public class, ciphertext length."""


def _key(algorithm: str, key: ProviderKey) -> AsymmetricKey:
    entry = KEMS.get(algorithm)
    if entry is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider has no KEM {algorithm}"
        )
    if not isinstance(key, AsymmetricKey) or not isinstance(key.public, entry[1]):
        raise invalid_argument(f"{algorithm} needs an {algorithm} key, not {key.algorithm}")
    return key


def encapsulate(algorithm: str, key: ProviderKey) -> tuple[bytes, SecretKey]:
    """(ciphertext, shared secret) for the encapsulation key in ``key``."""
    public = _key(algorithm, key).public
    assert isinstance(public, (mlkem.MLKEM768PublicKey, mlkem.MLKEM1024PublicKey))
    secret, ciphertext = public.encapsulate()
    return ciphertext, SecretKey("GENERIC-SECRET", secret)


def decapsulate(algorithm: str, key: ProviderKey, ciphertext: bytes) -> SecretKey:
    """Shared secret of ``ciphertext`` under the decapsulation key in ``key``."""
    private = _key(algorithm, key).private
    if private is None:
        raise invalid_argument(
            f"this {algorithm} key is an encapsulation key alone and cannot decapsulate"
        )
    assert isinstance(private, (mlkem.MLKEM768PrivateKey, mlkem.MLKEM1024PrivateKey))
    expected = KEMS[algorithm][2]
    if len(ciphertext) != expected:
        raise invalid_argument(
            f"an {algorithm} ciphertext is {expected} bytes long, got {len(ciphertext)}"
        )
    return SecretKey("GENERIC-SECRET", private.decapsulate(bytes(ciphertext)))
