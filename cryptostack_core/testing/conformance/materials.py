"""Key material the kit imports, made with pyca/cryptography (an implementation independent of
the provider under test), and reference computations to cross-check a provider's output.

Everything returns None for algorithms the kit cannot make or check itself; the checks then
fall back to material the provider made (a generated key's public half) and to round trips.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers import modes as decrepit_modes
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cryptostack_core.wire.algorithms import REGISTRY, KeyClass
from cryptostack_core.wire.resources import KeyFormat

_MLDSA_PUBLIC = (mldsa.MLDSA44PublicKey, mldsa.MLDSA65PublicKey, mldsa.MLDSA87PublicKey)

PRIVATE_FORMATS = (KeyFormat.PKCS8_DER, KeyFormat.RAW, KeyFormat.SEED)
"""Formats the kit tries, in order, to move a private key out of a provider and back."""

__all__ = [
    "PRIVATE_FORMATS",
    "private_material",
    "public_material",
    "reference_cipher",
    "secret_length",
    "verify_independently",
]

_PKCS8 = (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def secret_length(algorithm: str) -> int:
    """A valid length for a secret key of ``algorithm`` (its key size, else 32 bytes)."""
    return REGISTRY.get(algorithm).key_size or 32


def private_material(algorithm: str) -> tuple[bytes, KeyFormat] | None:
    """Fresh material for a key of ``algorithm`` in a format every provider of it should
    import, or None when the kit cannot make it (then it uses the provider's own keys)."""
    spec = REGISTRY.get(algorithm)
    if spec.key_class is KeyClass.SYMMETRIC:
        return os.urandom(secret_length(algorithm)), KeyFormat.RAW
    if algorithm in ("ECDSA-P256", "ECDH-P256"):
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(*_PKCS8), KeyFormat.PKCS8_DER
    if algorithm == "ECDSA-P384":
        return ec.generate_private_key(ec.SECP384R1()).private_bytes(*_PKCS8), KeyFormat.PKCS8_DER
    if algorithm == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate().private_bytes(*_PKCS8), KeyFormat.PKCS8_DER
    if algorithm == "X25519":
        return x25519.X25519PrivateKey.generate().private_bytes(*_PKCS8), KeyFormat.PKCS8_DER
    if algorithm == "RSA-2048":  # larger moduli take too long to make
        return rsa.generate_private_key(65537, 2048).private_bytes(*_PKCS8), KeyFormat.PKCS8_DER
    if algorithm.startswith("ML-KEM-"):
        return os.urandom(64), KeyFormat.SEED  # d || z (FIPS 203): any 64 bytes are a key
    return None


def public_material(algorithm: str) -> bytes | None:
    """A fresh public key (SubjectPublicKeyInfo DER) of ``algorithm``, or None."""
    private = private_material(algorithm)
    if private is None or private[1] is not KeyFormat.PKCS8_DER:
        makers: dict[str, Any] = {
            "ML-DSA-44": mldsa.MLDSA44PrivateKey,
            "ML-DSA-65": mldsa.MLDSA65PrivateKey,
            "ML-DSA-87": mldsa.MLDSA87PrivateKey,
        }
        maker = makers.get(algorithm)
        if maker is None:
            return None
        public: bytes = (
            maker.generate()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return public
    key = serialization.load_der_private_key(private[0], None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER,  # type: ignore[union-attr]
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def verify_independently(
    algorithm: str, spki: bytes, message: bytes, signature: bytes, context: bytes = b""
) -> bool | None:
    """Verify with pyca; None when pyca cannot check ``algorithm``."""
    try:
        public = serialization.load_der_public_key(spki)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    try:
        if algorithm in ("ECDSA-P256", "ECDSA-P384") and isinstance(public, ec.EllipticCurvePublicKey):
            digest = hashes.SHA256() if algorithm == "ECDSA-P256" else hashes.SHA384()
            public.verify(signature, message, ec.ECDSA(digest))
        elif algorithm == "Ed25519" and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif algorithm == "RSA-PSS-SHA256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(
                signature,
                message,
                padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                hashes.SHA256(),
            )
        elif algorithm.startswith("ML-DSA-") and isinstance(public, _MLDSA_PUBLIC):
            public.verify(signature, message, context or None)
        else:
            return None
    except InvalidSignature:
        return False
    return True


def reference_cipher(algorithm: str, key: bytes, iv: bytes, plaintext: bytes) -> bytes | None:
    """AES-CBC (PKCS#7), -CTR and -CFB128 encryption with pyca; None for other algorithms."""
    mode: modes.Mode
    if algorithm.endswith("-CBC"):
        padder = block_padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
        mode = modes.CBC(iv)
    elif algorithm.endswith("-CTR"):
        mode = modes.CTR(iv)
    elif algorithm.endswith("-CFB"):
        mode = decrepit_modes.CFB(iv)
    else:
        return None
    if not algorithm.startswith("AES-"):
        return None
    encryptor = Cipher(algorithms.AES(key), mode).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()
