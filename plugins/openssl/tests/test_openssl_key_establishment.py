"""ML-KEM, X25519, ECDH-P256, HKDF and random bytes of the OpenSSL provider, with interop
against pyca/cryptography used directly."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptostack_core.sdk import CryptoError, ErrorCode
from cryptostack_core.sdk import KeyFormat as F
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_openssl import OpenSSLProvider
from cryptostack_openssl.keys import SecretKey

SPKI = (ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
KEMS = {
    "ML-KEM-768": (mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey, 1088),
    "ML-KEM-1024": (mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey, 1568),
}


def secret(provider: OpenSSLProvider, key: object) -> bytes:
    assert isinstance(key, SecretKey) and key.algorithm == "GENERIC-SECRET"
    return provider.export_key(key, F.RAW)


@pytest.mark.parametrize("algorithm", sorted(KEMS))
def test_mlkem_interop_both_ways(provider: OpenSSLProvider, algorithm: str) -> None:
    cls, public_cls, ct_size = KEMS[algorithm]
    # pyca encapsulates to the provider's key; the provider decapsulates
    pair = provider.generate_key(algorithm, P.DECAPSULATE)
    ek = provider.export_public_key(pair, F.RAW)
    theirs = public_cls.from_public_bytes(ek)  # type: ignore[attr-defined]
    shared, ciphertext = theirs.encapsulate()
    key = provider.decapsulate(algorithm, pair, ciphertext, P.DERIVE)
    assert key.size == 32 and secret(provider, key) == shared
    # the provider encapsulates to pyca's key (imported as RAW and as SPKI); pyca decapsulates
    private = cls.generate()
    for material, fmt in [
        (private.public_key().public_bytes_raw(), F.RAW),
        (private.public_key().public_bytes(*SPKI), F.SPKI_DER),
    ]:
        public = provider.import_key(algorithm, material, fmt, P.ENCAPSULATE)
        assert not public.has_private
        ciphertext, key = provider.encapsulate(algorithm, public, P.DERIVE)
        assert len(ciphertext) == ct_size
        assert private.decapsulate(ciphertext) == secret(provider, key)
        with pytest.raises(CryptoError) as exc:
            provider.decapsulate(algorithm, public, ciphertext, P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_mlkem_ciphertext_rules(provider: OpenSSLProvider) -> None:
    seed = os.urandom(64)
    pair = provider.import_key("ML-KEM-768", seed, F.SEED, P.DECAPSULATE)
    reference = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    for length in (0, 1087, 1089, 1568):
        with pytest.raises(CryptoError) as exc:
            provider.decapsulate("ML-KEM-768", pair, bytes(length), P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    # a well-formed wrong ciphertext yields the implicit-rejection secret, as FIPS 203 says
    forged = os.urandom(1088)
    assert secret(
        provider, provider.decapsulate("ML-KEM-768", pair, forged, P.DERIVE)
    ) == reference.decapsulate(forged)
    other = provider.generate_key("ML-KEM-1024", P.DECAPSULATE)
    with pytest.raises(CryptoError) as exc:
        provider.encapsulate("ML-KEM-768", other, P.DERIVE)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_x25519_agreement_interop(provider: OpenSSLProvider) -> None:
    ours = provider.generate_key("X25519", P.AGREE)
    peer = x25519.X25519PrivateKey.generate()
    expected = peer.exchange(
        x25519.X25519PublicKey.from_public_bytes(provider.export_public_key(ours, F.RAW))
    )
    for encoded in (peer.public_key().public_bytes_raw(), peer.public_key().public_bytes(*SPKI)):
        assert secret(provider, provider.agree("X25519", ours, encoded, P.DERIVE)) == expected


def test_x25519_low_order_policy(provider: OpenSSLProvider) -> None:
    """Policy: a peer key giving the all-zero shared secret is INVALID_ARGUMENT."""
    ours = provider.generate_key("X25519", P.AGREE)
    for low_order in (
        bytes(32),
        b"\x01" + bytes(31),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ):
        with pytest.raises(CryptoError) as exc:
            provider.agree("X25519", ours, low_order, P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
        assert "low-order" in exc.value.message
    for bad in (
        bytes(31),
        b"\x30\x00",
        ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(*SPKI),
    ):
        with pytest.raises(CryptoError) as exc:
            provider.agree("X25519", ours, bad, P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_ecdh_p256_interop_and_peer_checks(provider: OpenSSLProvider) -> None:
    ours = provider.generate_key("ECDH-P256", P.AGREE)
    our_public = ser.load_der_public_key(provider.export_public_key(ours))
    assert isinstance(our_public, ec.EllipticCurvePublicKey)
    peer = ec.generate_private_key(ec.SECP256R1())
    expected = peer.exchange(ec.ECDH(), our_public)
    public = peer.public_key()
    for encoded in (
        public.public_bytes(*SPKI),
        public.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint),
        public.public_bytes(ser.Encoding.X962, ser.PublicFormat.CompressedPoint),
    ):
        assert secret(provider, provider.agree("ECDH-P256", ours, encoded, P.DERIVE)) == expected
    off_curve = b"\x04" + bytes(31) + b"\x01" + bytes(31) + b"\x01"
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    for bad in (
        off_curve,
        b"\x04" + bytes(64),
        p384.public_bytes(*SPKI),
        b"",
        b"\x05" * 65,
        p384.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint),
    ):
        with pytest.raises(CryptoError) as exc:
            provider.agree("ECDH-P256", ours, bad, P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    # an ECDSA-P256 key pair agrees too; a public key alone or another curve does not
    signing = provider.generate_key("ECDSA-P256", P.AGREE)
    provider.agree("ECDH-P256", signing, public.public_bytes(*SPKI), P.DERIVE)
    alone = provider.import_key("ECDH-P256", provider.export_public_key(ours), F.SPKI_DER, P.VERIFY)
    for key in (alone, provider.generate_key("ECDSA-P384", P.SIGN)):
        with pytest.raises(CryptoError) as exc:
            provider.agree("ECDH-P256", key, public.public_bytes(*SPKI), P.DERIVE)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("HKDF-SHA-256", hashes.SHA256),
        ("HKDF-SHA-384", hashes.SHA384),
        ("HKDF-SHA-512", hashes.SHA512),
    ],
)
def test_hkdf_matches_pyca(
    provider: OpenSSLProvider, algorithm: str, digest: type[hashes.HashAlgorithm]
) -> None:
    ikm = os.urandom(32)
    source = provider.import_key("GENERIC-SECRET", ikm, F.RAW, P.DERIVE)
    for salt, info, length, output in [
        (b"salt", b"info", 32, "AES-256"),
        (b"", b"", 16, "AES-128"),
        (os.urandom(80), b"x" * 50, 100, "GENERIC-SECRET"),
        (b"s", b"i", 0, "HMAC-SHA-384"),
    ]:
        key = provider.derive(
            algorithm,
            source,
            length=length,
            salt=salt,
            info=info,
            output_algorithm=output,
            permissions=P.ENCRYPT,
        )
        size = length or 48
        expected = HKDF(digest(), size, salt or None, info).derive(ikm)
        assert key.algorithm == output and provider.export_key(key, F.RAW) == expected


def test_hkdf_refusals(provider: OpenSSLProvider) -> None:
    source = provider.generate_key("GENERIC-SECRET", P.DERIVE)
    for length, output in [
        (16, "AES-256"),
        (255 * 32 + 1, "GENERIC-SECRET"),
        (-1, "GENERIC-SECRET"),
        (32, "Ed25519"),
        (8, "HMAC-SHA-256"),
    ]:
        with pytest.raises(CryptoError) as exc:
            provider.derive(
                "HKDF-SHA-256",
                source,
                length=length,
                salt=b"",
                info=b"",
                output_algorithm=output,
                permissions=P.ENCRYPT,
            )
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    pair = provider.generate_key("X25519", P.DERIVE)
    with pytest.raises(CryptoError) as exc:
        provider.derive(
            "HKDF-SHA-256",
            pair,
            length=32,
            salt=b"",
            info=b"",
            output_algorithm="AES-256",
            permissions=P.ENCRYPT,
        )
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_random_bytes(provider: OpenSSLProvider) -> None:
    a, b = provider.random_bytes(64), provider.random_bytes(64)
    assert len(a) == 64 and a != b and provider.random_bytes(0) == b""
    for bad in (-1, (1 << 20) + 1):
        with pytest.raises(CryptoError) as exc:
            provider.random_bytes(bad)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
