"""Keys of the OpenSSL provider: generation, import, export and the stored form.

A :class:`SecretKey` holds raw bytes (AES, ChaCha20-Poly1305, HMAC, GENERIC-SECRET); an
:class:`AsymmetricKey` holds pyca/cryptography key objects. Every import checks that the
material really is a key of the requested algorithm (curve, modulus size, parameter set),
and every failure is a ``CryptoError(INVALID_ARGUMENT)`` naming the algorithm and format.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa, x25519
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from cryptostack_core.sdk import CryptoError, ErrorCode, KeyFormat, ProviderKey, invalid_argument
from cryptostack_core.sdk import KeyOperationPermission as P

from . import policy
from .randomness import random_bytes

PrivateKey = Union[
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    x25519.X25519PrivateKey,
    mldsa.MLDSA44PrivateKey,
    mldsa.MLDSA65PrivateKey,
    mldsa.MLDSA87PrivateKey,
    mlkem.MLKEM768PrivateKey,
    mlkem.MLKEM1024PrivateKey,
]
PublicKey = Union[
    ec.EllipticCurvePublicKey,
    rsa.RSAPublicKey,
    ed25519.Ed25519PublicKey,
    x25519.X25519PublicKey,
    mldsa.MLDSA44PublicKey,
    mldsa.MLDSA65PublicKey,
    mldsa.MLDSA87PublicKey,
    mlkem.MLKEM768PublicKey,
    mlkem.MLKEM1024PublicKey,
]


class SecretKey(ProviderKey):
    """A symmetric key: its bytes, plus pyca objects built once on first use."""

    def __init__(self, algorithm: str, secret: bytes) -> None:
        self.algorithm = algorithm
        self.secret = bytes(secret)
        self.size = len(self.secret)
        self.has_private = True
        self.extractable = True

    @cached_property
    def aes(self) -> algorithms.AES:
        """The key as a pyca AES algorithm object (for CBC, CTR and streaming GCM)."""
        return algorithms.AES(self.secret)

    @cached_property
    def aesgcm(self) -> AESGCM:
        """One-shot AES-GCM with this key (used for full-length-tag decryption)."""
        return AESGCM(self.secret)

    @cached_property
    def chacha20_poly1305(self) -> ChaCha20Poly1305:
        """One-shot ChaCha20-Poly1305 with this key (used for decryption)."""
        return ChaCha20Poly1305(self.secret)

    def __repr__(self) -> str:
        return f"SecretKey({self.algorithm}, {self.size} bytes)"


class AsymmetricKey(ProviderKey):
    """A key pair (``private`` set) or a public key alone (``private`` None)."""

    def __init__(self, algorithm: str, public: PublicKey, private: PrivateKey | None) -> None:
        self.algorithm = algorithm
        self.public = public
        self.private = private
        self.has_private = private is not None
        self.extractable = True
        self.size = _key_size(public)

    def __repr__(self) -> str:
        kind = "pair" if self.has_private else "public"
        return f"AsymmetricKey({self.algorithm}, {kind})"


def _key_size(public: PublicKey) -> int:
    if isinstance(public, rsa.RSAPublicKey):
        return (public.key_size + 7) // 8
    if isinstance(public, ec.EllipticCurvePublicKey):
        return (public.curve.key_size + 7) // 8
    if isinstance(public, (ed25519.Ed25519PublicKey, x25519.X25519PublicKey)):
        return 32
    return 0


# --- the key families --------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    """How one asymmetric key algorithm is generated, recognised and encoded raw."""

    generate: Callable[[], Any]
    is_private: Callable[[object], bool]
    is_public: Callable[[object], bool]
    seed: Callable[[bytes], Any] | None = None  # SEED import
    seed_length: int = 0
    raw_public: Callable[[bytes], Any] | None = None
    raw_private: Callable[[bytes], Any] | None = None
    scalar_length: int = 0
    """EC only: length of a RAW private scalar (RAW public points are longer)."""
    private_use: P = P.NONE
    """Permissions that only a private key can serve: a 32-byte RAW Ed25519/X25519 import is
    read as a private key when the caller asks for one of them, as a public key otherwise."""
    description: str = ""


def _ec_family(curve: type[ec.EllipticCurve]) -> _Family:
    size = (curve().key_size + 7) // 8

    def raw_private(data: bytes) -> ec.EllipticCurvePrivateKey:
        if len(data) != size:
            raise ValueError(f"a raw private key is a {size}-byte big-endian scalar")
        return ec.derive_private_key(int.from_bytes(data, "big"), curve())

    def raw_public(data: bytes) -> ec.EllipticCurvePublicKey:
        if len(data) not in (2 * size + 1, size + 1):
            raise ValueError(f"a raw public key is a {2 * size + 1}-byte SEC1 point")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve(), data)

    return _Family(
        generate=lambda: ec.generate_private_key(curve()),
        is_private=lambda k: (
            isinstance(k, ec.EllipticCurvePrivateKey) and isinstance(k.curve, curve)
        ),
        is_public=lambda k: isinstance(k, ec.EllipticCurvePublicKey) and isinstance(k.curve, curve),
        raw_private=raw_private,
        raw_public=raw_public,
        scalar_length=size,
        description=f"{curve.name} EC key",
    )


def _rsa_family(bits: int) -> _Family:
    return _Family(
        generate=lambda: rsa.generate_private_key(policy.RSA_PUBLIC_EXPONENT, bits),
        is_private=lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == bits,
        is_public=lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == bits,
        description=f"RSA key with a {bits}-bit modulus",
    )


def _pq_family(private_cls: Any, public_cls: Any, seed_length: int, name: str) -> _Family:
    return _Family(
        generate=private_cls.generate,
        is_private=lambda k: isinstance(k, private_cls),
        is_public=lambda k: isinstance(k, public_cls),
        seed=private_cls.from_seed_bytes,
        seed_length=seed_length,
        raw_public=public_cls.from_public_bytes,
        description=f"{name} key",
    )


FAMILIES: dict[str, _Family] = {
    "ECDSA-P256": _ec_family(ec.SECP256R1),
    "ECDH-P256": _ec_family(ec.SECP256R1),
    "ECDSA-P384": _ec_family(ec.SECP384R1),
    "Ed25519": _Family(
        generate=ed25519.Ed25519PrivateKey.generate,
        is_private=lambda k: isinstance(k, ed25519.Ed25519PrivateKey),
        is_public=lambda k: isinstance(k, ed25519.Ed25519PublicKey),
        raw_private=ed25519.Ed25519PrivateKey.from_private_bytes,
        raw_public=ed25519.Ed25519PublicKey.from_public_bytes,
        private_use=P.SIGN,
        description="Ed25519 key",
    ),
    "X25519": _Family(
        generate=x25519.X25519PrivateKey.generate,
        is_private=lambda k: isinstance(k, x25519.X25519PrivateKey),
        is_public=lambda k: isinstance(k, x25519.X25519PublicKey),
        raw_private=x25519.X25519PrivateKey.from_private_bytes,
        raw_public=x25519.X25519PublicKey.from_public_bytes,
        private_use=P.AGREE | P.DERIVE,
        description="X25519 key",
    ),
    "RSA-2048": _rsa_family(2048),
    "RSA-3072": _rsa_family(3072),
    "RSA-4096": _rsa_family(4096),
    "ML-DSA-44": _pq_family(mldsa.MLDSA44PrivateKey, mldsa.MLDSA44PublicKey, 32, "ML-DSA-44"),
    "ML-DSA-65": _pq_family(mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey, 32, "ML-DSA-65"),
    "ML-DSA-87": _pq_family(mldsa.MLDSA87PrivateKey, mldsa.MLDSA87PublicKey, 32, "ML-DSA-87"),
    "ML-KEM-768": _pq_family(mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 64, "ML-KEM-768"),
    "ML-KEM-1024": _pq_family(
        mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 64, "ML-KEM-1024"
    ),
}
"""Asymmetric key algorithms this provider holds."""

SECRET_LENGTHS: dict[str, tuple[int, int]] = {
    "AES-128": (16, 16),
    "AES-192": (24, 24),
    "AES-256": (32, 32),
    "ChaCha20-Poly1305": (32, 32),
    "HMAC-SHA-256": (policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    "HMAC-SHA-384": (policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    "HMAC-SHA-512": (policy.HMAC_KEY_MIN, policy.SECRET_KEY_MAX),
    "GENERIC-SECRET": (policy.GENERIC_SECRET_MIN, policy.SECRET_KEY_MAX),
}
"""Symmetric key algorithms and the lengths imported (inclusive range, bytes)."""

GENERATED_SECRET_LENGTHS = {
    "HMAC-SHA-256": 32,
    "HMAC-SHA-384": 48,
    "HMAC-SHA-512": 64,
    "GENERIC-SECRET": policy.GENERIC_SECRET_GENERATED,
}
"""Lengths of generated HMAC and GENERIC-SECRET keys (AES/ChaCha keys have one length)."""

KEY_ALGORITHMS = frozenset(SECRET_LENGTHS) | frozenset(FAMILIES)
"""Every key algorithm this provider generates and imports."""


# --- generate and import -------------------------------------------------------------------


def generate_key(algorithm: str) -> ProviderKey:
    """A fresh key of ``algorithm`` (secret bytes from the OS, pairs from OpenSSL)."""
    if algorithm in SECRET_LENGTHS:
        length = GENERATED_SECRET_LENGTHS.get(algorithm, SECRET_LENGTHS[algorithm][0])
        return SecretKey(algorithm, random_bytes(length))
    family = _family(algorithm)
    private = family.generate()
    return AsymmetricKey(algorithm, private.public_key(), private)


def import_key(
    algorithm: str, material: bytes, fmt: KeyFormat, permissions: P = P.NONE
) -> ProviderKey:
    """Build a key from caller material, checking it is a key of ``algorithm``."""
    material = bytes(material)
    if algorithm in SECRET_LENGTHS:
        if fmt is not KeyFormat.RAW:
            raise invalid_argument(f"{algorithm} keys are imported as RAW bytes, not {fmt.value}")
        return secret_key(algorithm, material)
    family = _family(algorithm)
    try:
        obj = _decode(algorithm, family, material, fmt, permissions)
    except CryptoError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise invalid_argument(
            f"{fmt.value} material is not a valid {algorithm} key: {exc}"
        ) from None
    if family.is_private(obj):
        return AsymmetricKey(algorithm, obj.public_key(), obj)
    if family.is_public(obj):
        return AsymmetricKey(algorithm, obj, None)
    raise invalid_argument(
        f"{fmt.value} material holds {_describe(obj)}, "
        f"not the {family.description} {algorithm} needs"
    )


def secret_key(algorithm: str, material: bytes) -> SecretKey:
    """A symmetric key of ``algorithm`` from raw bytes, checking the length policy."""
    if algorithm not in SECRET_LENGTHS:
        raise invalid_argument(f"{algorithm} is not a symmetric key algorithm")
    low, high = SECRET_LENGTHS[algorithm]
    if not low <= len(material) <= high:
        expected = f"{low}" if low == high else f"{low} to {high}"
        raise invalid_argument(f"a {algorithm} key is {expected} bytes long, got {len(material)}")
    return SecretKey(algorithm, material)


def _decode(
    algorithm: str, family: _Family, material: bytes, fmt: KeyFormat, permissions: P
) -> Any:
    if fmt is KeyFormat.SPKI_DER:
        return ser.load_der_public_key(material)
    if fmt is KeyFormat.PKCS8_DER:
        return ser.load_der_private_key(material, password=None)
    if fmt is KeyFormat.PEM:
        if b"PRIVATE KEY-----" in material:
            return ser.load_pem_private_key(material, password=None)
        return ser.load_pem_public_key(material)
    if fmt is KeyFormat.SEED:
        if family.seed is None:
            raise invalid_argument(f"{algorithm} keys have no SEED form")
        if len(material) != family.seed_length:
            raise invalid_argument(
                f"an {algorithm} seed is {family.seed_length} bytes long, got {len(material)}"
            )
        return family.seed(material)
    if fmt is KeyFormat.RAW:
        return _decode_raw(algorithm, family, material, permissions)
    raise invalid_argument(f"unknown key format {fmt!r}")


def _decode_raw(algorithm: str, family: _Family, material: bytes, permissions: P) -> Any:
    if family.raw_public is None:
        raise invalid_argument(f"{algorithm} keys have no RAW form; use SPKI_DER, PKCS8_DER or PEM")
    if family.raw_private is None:
        return family.raw_public(material)
    if family.scalar_length:
        # EC scalars and SEC1 points differ in length, so the length decides.
        scalar = len(material) == family.scalar_length
        return (family.raw_private if scalar else family.raw_public)(material)
    # Ed25519/X25519: private and public keys are both 32 bytes; the permissions decide.
    if permissions & family.private_use:
        return family.raw_private(material)
    return family.raw_public(material)


def _family(algorithm: str) -> _Family:
    family = FAMILIES.get(algorithm)
    if family is None:
        raise CryptoError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"the openssl provider has no {algorithm} keys"
        )
    return family


def _describe(obj: object) -> str:
    if isinstance(obj, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"a {obj.curve.name} EC key"
    if isinstance(obj, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"an RSA key with a {obj.key_size}-bit modulus"
    name = type(obj).__name__.replace("PrivateKey", "").replace("PublicKey", "")
    return f"a {name} key"


# --- export ---------------------------------------------------------------------------------

_PKCS8 = (ser.PrivateFormat.PKCS8, ser.NoEncryption())


def export_key(key: ProviderKey, fmt: KeyFormat) -> bytes:
    """Secret or private material of ``key`` in ``fmt``."""
    if isinstance(key, SecretKey):
        if fmt is not KeyFormat.RAW:
            raise invalid_argument(f"{key.algorithm} keys are exported as RAW, not {fmt.value}")
        return key.secret
    pair = _asymmetric(key)
    private = pair.private
    if private is None:
        raise invalid_argument(
            f"this {pair.algorithm} key is a public key alone; use export_public_key"
        )
    if fmt is KeyFormat.PKCS8_DER:
        return private.private_bytes(ser.Encoding.DER, *_PKCS8)
    if fmt is KeyFormat.PEM:
        return private.private_bytes(ser.Encoding.PEM, *_PKCS8)
    if fmt is KeyFormat.SEED:
        if not isinstance(
            private,
            (
                mldsa.MLDSA44PrivateKey,
                mldsa.MLDSA65PrivateKey,
                mldsa.MLDSA87PrivateKey,
                mlkem.MLKEM768PrivateKey,
                mlkem.MLKEM1024PrivateKey,
            ),
        ):
            raise invalid_argument(f"{pair.algorithm} keys have no SEED form")
        return private.private_bytes_raw()
    if fmt is KeyFormat.RAW:
        if isinstance(private, (ed25519.Ed25519PrivateKey, x25519.X25519PrivateKey)):
            return private.private_bytes_raw()
        if isinstance(private, ec.EllipticCurvePrivateKey):
            size = (private.curve.key_size + 7) // 8
            return private.private_numbers().private_value.to_bytes(size, "big")
        raise invalid_argument(
            f"{pair.algorithm} private keys have no RAW form "
            "(SEED for ML-DSA/ML-KEM, PKCS8_DER otherwise)"
        )
    raise invalid_argument(f"unknown key format {fmt!r}")


def export_public_key(key: ProviderKey, fmt: KeyFormat = KeyFormat.SPKI_DER) -> bytes:
    """Public key of an asymmetric key: SPKI DER, PEM, or RAW (raw bytes, SEC1 point for EC)."""
    public = _asymmetric(key).public
    if fmt is KeyFormat.SPKI_DER:
        return public.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    if fmt is KeyFormat.PEM:
        return public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    if fmt is KeyFormat.RAW:
        if isinstance(public, ec.EllipticCurvePublicKey):
            return public.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        if isinstance(public, rsa.RSAPublicKey):
            raise invalid_argument("RSA public keys have no RAW form; use SPKI_DER")
        return public.public_bytes_raw()
    raise invalid_argument(f"public keys are exported as SPKI_DER, PEM or RAW, not {fmt.value}")


def _asymmetric(key: ProviderKey) -> AsymmetricKey:
    if not isinstance(key, AsymmetricKey):
        raise invalid_argument(f"{key.algorithm} is not an asymmetric key")
    return key


# --- stored form ----------------------------------------------------------------------------

_MAGIC = b"CSOSSL\x01"
"""Stored-key header: magic and version. Then one length-prefixed field each for the key
algorithm and the KeyFormat name, then the material in that format (RAW for secrets, SEED
for ML-DSA/ML-KEM pairs, PKCS8_DER for other pairs, SPKI_DER for public keys alone)."""


def serialize(key: ProviderKey) -> bytes:
    """Self-describing durable form of ``key`` (the key store encrypts it at rest)."""
    if isinstance(key, SecretKey):
        fmt, material = KeyFormat.RAW, key.secret
    else:
        pair = _asymmetric(key)
        if pair.private is None:
            fmt = KeyFormat.SPKI_DER
            material = export_public_key(pair, fmt)
        else:
            fmt = KeyFormat.SEED if pair.algorithm.startswith("ML-") else KeyFormat.PKCS8_DER
            material = export_key(pair, fmt)
    return pack(key.algorithm, fmt, material)


def pack(algorithm: str, fmt: KeyFormat, material: bytes) -> bytes:
    """The stored-key blob for ``material`` in ``fmt`` (see ``_MAGIC``)."""
    name = algorithm.encode()
    fmt_name = fmt.value.encode()
    return b"".join(
        [
            _MAGIC,
            struct.pack("B", len(name)),
            name,
            struct.pack("B", len(fmt_name)),
            fmt_name,
            material,
        ]
    )


def unpack(blob: bytes, algorithm: str) -> tuple[KeyFormat, bytes]:
    """(format, material) of a :func:`pack` blob, which must hold a key of ``algorithm``."""
    try:
        if not blob.startswith(_MAGIC):
            raise ValueError("not an openssl-provider key blob")
        pos = len(_MAGIC)
        fields = []
        for _ in range(2):
            length = blob[pos]
            fields.append(blob[pos + 1 : pos + 1 + length].decode("ascii"))
            pos += 1 + length
        stored_algorithm, fmt_name = fields
        fmt = KeyFormat(fmt_name)
        material = blob[pos:]
    except (ValueError, IndexError) as exc:
        raise invalid_argument(f"corrupt stored key: {exc}") from None
    if stored_algorithm != algorithm:
        raise invalid_argument(f"the stored key is {stored_algorithm}, not {algorithm}")
    return fmt, material


def deserialize(blob: bytes, algorithm: str) -> ProviderKey:
    """Rebuild a key from :func:`serialize` output; it must be a key of ``algorithm``."""
    fmt, material = unpack(blob, algorithm)
    # SPKI_DER yields a public key; every other stored format is unambiguous too.
    return import_key(algorithm, material, fmt)
