"""Key generation, import, export and the stored form of the OpenSSL provider."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa, x25519

from cryptostack_core.sdk import CryptoError, ErrorCode, StoredKey
from cryptostack_core.sdk import KeyFormat as F
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_openssl import OpenSSLProvider
from cryptostack_openssl.keys import AsymmetricKey, SecretKey

DER, PEM = ser.Encoding.DER, ser.Encoding.PEM
SPKI = ser.PublicFormat.SubjectPublicKeyInfo
PKCS8 = ser.PrivateFormat.PKCS8
NOENC = ser.NoEncryption()

SECRET_SIZES = {
    "AES-128": 16,
    "AES-192": 24,
    "AES-256": 32,
    "ChaCha20-Poly1305": 32,
    "HMAC-SHA-256": 32,
    "HMAC-SHA-384": 48,
    "HMAC-SHA-512": 64,
    "GENERIC-SECRET": 32,
}
FAST_PAIRS = [
    "ECDSA-P256",
    "ECDSA-P384",
    "ECDH-P256",
    "Ed25519",
    "X25519",
    "ML-DSA-44",
    "ML-DSA-65",
    "ML-DSA-87",
    "ML-KEM-768",
    "ML-KEM-1024",
]


def invalid(exc: pytest.ExceptionInfo[CryptoError]) -> None:
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT, exc.value


@pytest.mark.parametrize("algorithm", sorted(SECRET_SIZES))
def test_generate_secret_keys(provider: OpenSSLProvider, algorithm: str) -> None:
    a = provider.generate_key(algorithm, P.ENCRYPT)
    b = provider.generate_key(algorithm, P.ENCRYPT)
    assert isinstance(a, SecretKey) and a.algorithm == algorithm
    assert a.size == SECRET_SIZES[algorithm] and a.extractable and a.has_private
    raw = provider.export_key(a, F.RAW)
    assert len(raw) == SECRET_SIZES[algorithm] and raw != provider.export_key(b, F.RAW)
    assert "bytes" in repr(a) and raw.hex() not in repr(a)


@pytest.mark.parametrize("algorithm", FAST_PAIRS)
def test_generate_pairs_export_reimport(provider: OpenSSLProvider, algorithm: str) -> None:
    key = provider.generate_key(algorithm, P.SIGN)
    assert isinstance(key, AsymmetricKey) and key.has_private and key.extractable
    spki = provider.export_public_key(key)
    assert ser.load_der_public_key(spki).public_bytes(DER, SPKI) == spki
    for fmt in (F.PKCS8_DER, F.PEM):
        again = provider.import_key(algorithm, provider.export_key(key, fmt), fmt, P.SIGN)
        assert again.has_private and provider.export_public_key(again) == spki
    public = provider.import_key(algorithm, spki, F.SPKI_DER, P.VERIFY)
    assert not public.has_private and provider.export_public_key(public) == spki
    pem = provider.export_public_key(key, F.PEM)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert provider.export_public_key(provider.import_key(algorithm, pem, F.PEM, P.VERIFY)) == spki
    raw_public = provider.export_public_key(key, F.RAW)
    assert (
        provider.export_public_key(provider.import_key(algorithm, raw_public, F.RAW, P.VERIFY))
        == spki
    )
    with pytest.raises(CryptoError) as exc:
        provider.export_key(public, F.PKCS8_DER)
    invalid(exc)


def test_rsa_generate_each_size(provider: OpenSSLProvider) -> None:
    for bits in (2048, 3072, 4096):
        key = provider.generate_key(f"RSA-{bits}", P.SIGN)
        assert isinstance(key, AsymmetricKey) and key.size == bits // 8
        assert isinstance(key.private, rsa.RSAPrivateKey)
        assert key.private.private_numbers().public_numbers.e == 65537
        der = provider.export_key(key, F.PKCS8_DER)
        assert provider.import_key(f"RSA-{bits}", der, F.PKCS8_DER, P.SIGN).size == bits // 8


def test_rsa_import_needs_exact_modulus_size(provider: OpenSSLProvider) -> None:
    key = rsa.generate_private_key(65537, 2048)
    der = key.private_bytes(DER, PKCS8, NOENC)
    provider.import_key("RSA-2048", der, F.PKCS8_DER, P.SIGN)
    for other in ("RSA-3072", "RSA-4096"):
        with pytest.raises(CryptoError) as exc:
            provider.import_key(other, der, F.PKCS8_DER, P.SIGN)
        invalid(exc)
        assert "2048-bit" in exc.value.message
    odd = rsa.generate_private_key(65537, 2304)  # between the named sizes: no rounding
    for name in ("RSA-2048", "RSA-3072"):
        with pytest.raises(CryptoError) as exc:
            provider.import_key(
                name, odd.public_key().public_bytes(DER, SPKI), F.SPKI_DER, P.VERIFY
            )
        invalid(exc)
    with pytest.raises(CryptoError) as exc:
        provider.import_key("RSA-2048", b"\x00" * 256, F.RAW, P.VERIFY)
    invalid(exc)


def _mismatched() -> list[tuple[str, bytes, F]]:
    return [
        (
            "ECDSA-P256",
            ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(DER, SPKI),
            F.SPKI_DER,
        ),
        (
            "ECDSA-P384",
            ec.generate_private_key(ec.SECP256R1()).private_bytes(DER, PKCS8, NOENC),
            F.PKCS8_DER,
        ),
        (
            "X25519",
            ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(DER, SPKI),
            F.SPKI_DER,
        ),
        ("Ed25519", x25519.X25519PrivateKey.generate().private_bytes(PEM, PKCS8, NOENC), F.PEM),
        (
            "ML-DSA-65",
            mldsa.MLDSA44PrivateKey.generate().public_key().public_bytes(DER, SPKI),
            F.SPKI_DER,
        ),
        ("ML-DSA-65", mldsa.MLDSA44PrivateKey.generate().public_key().public_bytes_raw(), F.RAW),
        (
            "ML-KEM-1024",
            mlkem.MLKEM768PrivateKey.generate().private_bytes(DER, PKCS8, NOENC),
            F.PKCS8_DER,
        ),
        (
            "ECDH-P256",
            rsa.generate_private_key(65537, 2048).public_key().public_bytes(DER, SPKI),
            F.SPKI_DER,
        ),
    ]


# ids are fixed: the material is random, and parallel workers must collect the same tests
@pytest.mark.parametrize(
    ("algorithm", "material", "fmt"),
    _mismatched(),
    ids=[
        "P384-as-P256",
        "P256-as-P384",
        "Ed25519-as-X25519",
        "X25519-as-Ed25519",
        "MLDSA44-as-65-spki",
        "MLDSA44-as-65-raw",
        "MLKEM768-as-1024",
        "RSA-as-ECDH",
    ],
)
def test_import_refuses_a_key_of_another_algorithm(
    provider: OpenSSLProvider, algorithm: str, material: bytes, fmt: F
) -> None:
    with pytest.raises(CryptoError) as exc:
        provider.import_key(algorithm, material, fmt, P.VERIFY | P.SIGN)
    invalid(exc)
    assert algorithm in exc.value.message


@pytest.mark.parametrize(
    ("algorithm", "material", "fmt"),
    [
        ("AES-256", bytes(31), F.RAW),
        ("AES-128", bytes(32), F.RAW),
        ("AES-256", bytes(32), F.PKCS8_DER),
        ("ChaCha20-Poly1305", bytes(16), F.RAW),
        ("HMAC-SHA-256", bytes(15), F.RAW),
        ("HMAC-SHA-256", bytes(1025), F.RAW),
        ("GENERIC-SECRET", b"", F.RAW),
        ("ECDSA-P256", b"\x30\x03\x02\x01\x01", F.SPKI_DER),
        ("ECDSA-P256", b"not a key", F.PKCS8_DER),
        ("ECDSA-P256", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", F.PEM),
        ("ECDSA-P256", b"\x04" + bytes(64), F.RAW),  # (0, 0) is not on the curve
        ("ECDSA-P256", bytes(32), F.RAW),  # scalar 0
        ("ECDSA-P256", b"\xff" * 32, F.RAW),  # scalar >= n
        ("Ed25519", bytes(31), F.RAW),
        ("X25519", bytes(33), F.RAW),
        ("ML-DSA-65", bytes(31), F.SEED),
        ("ML-KEM-768", bytes(32), F.SEED),
        ("ML-KEM-768", bytes(1183), F.RAW),
        ("ML-KEM-768", b"\xff" * 1184, F.RAW),  # every coefficient overflows q
        ("Ed25519", bytes(32), F.SEED),
    ],
)
def test_import_refuses_malformed_material(
    provider: OpenSSLProvider, algorithm: str, material: bytes, fmt: F
) -> None:
    with pytest.raises(CryptoError) as exc:
        provider.import_key(algorithm, material, fmt, P.SIGN | P.ENCRYPT | P.ENCAPSULATE)
    invalid(exc)


def test_encrypted_pem_is_refused(provider: OpenSSLProvider) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        PEM, PKCS8, ser.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(CryptoError) as exc:
        provider.import_key("ECDSA-P256", pem, F.PEM, P.SIGN)
    invalid(exc)


def test_traditional_pem_private_key_is_accepted(provider: OpenSSLProvider) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(PEM, ser.PrivateFormat.TraditionalOpenSSL, NOENC)
    key = provider.import_key("ECDSA-P256", pem, F.PEM, P.SIGN)
    assert key.has_private
    assert provider.export_public_key(key) == private.public_key().public_bytes(DER, SPKI)


def test_raw_25519_private_or_public_by_permissions(provider: OpenSSLProvider) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    seed = ed.private_bytes_raw()
    private = provider.import_key("Ed25519", seed, F.RAW, P.SIGN | P.VERIFY)
    assert private.has_private
    assert provider.export_public_key(private, F.RAW) == ed.public_key().public_bytes_raw()
    assert provider.export_key(private, F.RAW) == seed
    public = provider.import_key("Ed25519", ed.public_key().public_bytes_raw(), F.RAW, P.VERIFY)
    assert not public.has_private
    xk = x25519.X25519PrivateKey.generate()
    for perms in (P.AGREE, P.DERIVE):
        pair = provider.import_key("X25519", xk.private_bytes_raw(), F.RAW, perms)
        assert pair.has_private
        assert provider.export_public_key(pair, F.RAW) == xk.public_key().public_bytes_raw()
    assert not provider.import_key(
        "X25519", xk.public_key().public_bytes_raw(), F.RAW, P.NONE
    ).has_private


def test_ec_raw_scalar_and_point(provider: OpenSSLProvider) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    scalar = private.private_numbers().private_value.to_bytes(48, "big")
    key = provider.import_key("ECDSA-P384", scalar, F.RAW, P.SIGN)
    assert provider.export_key(key, F.RAW) == scalar
    point = private.public_key().public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    assert provider.export_public_key(key, F.RAW) == point
    compressed = private.public_key().public_bytes(
        ser.Encoding.X962, ser.PublicFormat.CompressedPoint
    )
    public = provider.import_key("ECDSA-P384", compressed, F.RAW, P.VERIFY)
    assert not public.has_private and provider.export_public_key(public, F.RAW) == point


def test_pq_seeds(provider: OpenSSLProvider) -> None:
    seed64 = os.urandom(64)
    kem = provider.import_key("ML-KEM-768", seed64, F.SEED, P.DECAPSULATE)
    reference = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed64)
    assert provider.export_key(kem, F.SEED) == seed64
    assert provider.export_public_key(kem, F.RAW) == reference.public_key().public_bytes_raw()
    seed32 = os.urandom(32)
    dsa = provider.import_key("ML-DSA-87", seed32, F.SEED, P.SIGN)
    assert provider.export_key(dsa, F.SEED) == seed32
    assert (
        provider.export_public_key(dsa, F.RAW)
        == mldsa.MLDSA87PrivateKey.from_seed_bytes(seed32).public_key().public_bytes_raw()
    )
    for fmt in (F.RAW,):
        with pytest.raises(CryptoError) as exc:
            provider.export_key(dsa, fmt)
        invalid(exc)


def test_wrong_export_formats(provider: OpenSSLProvider) -> None:
    aes = provider.generate_key("AES-128", P.ENCRYPT)
    for fmt in (F.PKCS8_DER, F.PEM, F.SEED):
        with pytest.raises(CryptoError) as exc:
            provider.export_key(aes, fmt)
        invalid(exc)
    with pytest.raises(CryptoError) as exc:
        provider.export_public_key(aes)
    invalid(exc)
    ec_key = provider.generate_key("ECDSA-P256", P.SIGN)
    with pytest.raises(CryptoError) as exc:
        provider.export_key(ec_key, F.SEED)
    invalid(exc)
    with pytest.raises(CryptoError) as exc:
        provider.export_public_key(ec_key, F.SEED)
    invalid(exc)


@pytest.mark.parametrize("algorithm", [*sorted(SECRET_SIZES), *FAST_PAIRS, "RSA-2048"])
def test_persist_and_load_round_trip(provider: OpenSSLProvider, algorithm: str) -> None:
    if algorithm == "RSA-2048":
        der = rsa.generate_private_key(65537, 2048).private_bytes(DER, PKCS8, NOENC)
        key = provider.import_key(algorithm, der, F.PKCS8_DER, P.SIGN)
    else:
        key = provider.generate_key(algorithm, P.SIGN)
    stored = provider.persist_key(key, "Slot")
    assert stored.secret is True and isinstance(stored.blob, bytes)
    assert algorithm.encode() in stored.blob  # self-describing header
    loaded = provider.load_stored_key(stored, algorithm, P.SIGN)
    assert loaded.algorithm == algorithm and loaded.has_private
    if isinstance(key, SecretKey):
        assert provider.export_key(loaded, F.RAW) == provider.export_key(key, F.RAW)
    else:
        assert provider.export_public_key(loaded) == provider.export_public_key(key)
        assert provider.export_key(loaded, F.PKCS8_DER) == provider.export_key(key, F.PKCS8_DER)
    # copy semantics: the original stays usable
    assert provider.persist_key(key, "Other").blob == stored.blob


def test_persist_public_key_alone(provider: OpenSSLProvider) -> None:
    pair = provider.generate_key("Ed25519", P.SIGN)
    public = provider.import_key("Ed25519", provider.export_public_key(pair), F.SPKI_DER, P.VERIFY)
    loaded = provider.load_stored_key(provider.persist_key(public, "Pub"), "Ed25519", P.VERIFY)
    assert not loaded.has_private
    assert provider.export_public_key(loaded) == provider.export_public_key(pair)


def test_load_stored_key_refuses_mismatch_and_garbage(provider: OpenSSLProvider) -> None:
    stored = provider.persist_key(provider.generate_key("AES-256", P.ENCRYPT), "S")
    for blob, algorithm in [
        (stored.blob, "AES-128"),
        (b"garbage", "AES-256"),
        (stored.blob[:9], "AES-256"),
        (b"", "AES-256"),
    ]:
        with pytest.raises(CryptoError) as exc:
            provider.load_stored_key(StoredKey(blob=blob, secret=True), algorithm, P.ENCRYPT)
        invalid(exc)
