"""Signatures and MACs of the OpenSSL provider: round trips, streaming, interop with
pyca/cryptography both ways, malformed signatures, context strings and MAC truncation."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric import padding as apad

from cryptostack_core.sdk import CryptoError, ErrorCode, ProviderKey
from cryptostack_core.sdk import KeyFormat as F
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_openssl import OpenSSLProvider

MESSAGE = os.urandom(3000)
PIECES = [MESSAGE[i : i + 97] for i in range(0, len(MESSAGE), 97)]
PSS = apad.PSS(apad.MGF1(hashes.SHA256()), 32)

# algorithm -> (key algorithm, pyca private key factory, pyca verify(pub, sig, msg, ctx))
Verify = Callable[[object, bytes, bytes, bytes], None]
CASES: dict[str, tuple[str, Callable[[], object], Verify]] = {
    "ECDSA-P256": (
        "ECDSA-P256",
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda k, s, m, c: k.verify(s, m, ec.ECDSA(hashes.SHA256())),
    ),  # type: ignore[attr-defined]
    "ECDSA-P384": (
        "ECDSA-P384",
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda k, s, m, c: k.verify(s, m, ec.ECDSA(hashes.SHA384())),
    ),  # type: ignore[attr-defined]
    "RSA-PSS-SHA256": (
        "RSA-2048",
        lambda: rsa.generate_private_key(65537, 2048),
        lambda k, s, m, c: k.verify(s, m, PSS, hashes.SHA256()),
    ),  # type: ignore[attr-defined]
    "Ed25519": ("Ed25519", ed25519.Ed25519PrivateKey.generate, lambda k, s, m, c: k.verify(s, m)),  # type: ignore[attr-defined]
    "ML-DSA-44": (
        "ML-DSA-44",
        mldsa.MLDSA44PrivateKey.generate,
        lambda k, s, m, c: k.verify(s, m, c),
    ),  # type: ignore[attr-defined]
    "ML-DSA-65": (
        "ML-DSA-65",
        mldsa.MLDSA65PrivateKey.generate,
        lambda k, s, m, c: k.verify(s, m, c),
    ),  # type: ignore[attr-defined]
    "ML-DSA-87": (
        "ML-DSA-87",
        mldsa.MLDSA87PrivateKey.generate,
        lambda k, s, m, c: k.verify(s, m, c),
    ),  # type: ignore[attr-defined]
}
SIZES = {
    "ECDSA-P256": 72,
    "ECDSA-P384": 104,
    "RSA-PSS-SHA256": 256,
    "Ed25519": 64,
    "ML-DSA-44": 2420,
    "ML-DSA-65": 3309,
    "ML-DSA-87": 4627,
}


def pyca_sign(private: object, algorithm: str, message: bytes, context: bytes) -> bytes:
    if algorithm.startswith("ECDSA"):
        digest = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA384()
        return private.sign(message, ec.ECDSA(digest))  # type: ignore[attr-defined,no-any-return]
    if algorithm.startswith("RSA"):
        return private.sign(message, PSS, hashes.SHA256())  # type: ignore[attr-defined,no-any-return]
    if algorithm.startswith("ML-DSA"):
        return private.sign(message, context)  # type: ignore[attr-defined,no-any-return]
    return private.sign(message)  # type: ignore[attr-defined,no-any-return]


def sign(
    provider: OpenSSLProvider,
    algorithm: str,
    key: ProviderKey,
    pieces: list[bytes],
    context: bytes = b"",
) -> bytes:
    op = provider.create_signer(algorithm, key, context)
    for piece in pieces:
        op.update(memoryview(piece))
    return op.finalize()


def verify(
    provider: OpenSSLProvider,
    algorithm: str,
    key: ProviderKey,
    pieces: list[bytes],
    signature: bytes,
    context: bytes = b"",
) -> bool:
    op = provider.create_verifier(algorithm, key, context)
    for piece in pieces:
        op.update(piece)
    return op.finalize(signature)


@pytest.mark.parametrize("algorithm", sorted(CASES))
def test_sign_verify_interop(provider: OpenSSLProvider, algorithm: str) -> None:
    key_algorithm, factory, pyca_verify = CASES[algorithm]
    context = b"ctx-string" if algorithm.startswith("ML-DSA") else b""
    private = factory()
    der = private.private_bytes(  # type: ignore[attr-defined]
        ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    )
    pair = provider.import_key(key_algorithm, der, F.PKCS8_DER, P.SIGN | P.VERIFY)
    public = provider.import_key(
        key_algorithm, provider.export_public_key(pair), F.SPKI_DER, P.VERIFY
    )
    assert provider.signature_size(algorithm, pair) == SIZES[algorithm]
    # provider signs in many updates -> pyca verifies the whole message
    signature = sign(provider, algorithm, pair, PIECES, context)
    assert len(signature) <= SIZES[algorithm]
    pyca_verify(private.public_key(), signature, MESSAGE, context)  # type: ignore[attr-defined]
    # pyca signs -> the provider verifies, streaming and in one piece, with either key
    theirs = pyca_sign(private, algorithm, MESSAGE, context)
    for key in (pair, public):
        assert verify(provider, algorithm, key, PIECES, theirs, context)
        assert verify(provider, algorithm, key, [MESSAGE], signature, context)
        assert verify(
            provider, algorithm, key, [], pyca_sign(private, algorithm, b"", context), context
        )
    # wrong message, wrong or malformed signature: False, never an exception
    assert not verify(provider, algorithm, public, [MESSAGE[:-1]], signature, context)
    for bad in (
        b"",
        b"\x30\x00",
        signature[:-1],
        signature + b"\x00",
        bytes(len(signature)),
        bytes([signature[0] ^ 1]) + signature[1:],
        os.urandom(len(signature)),
    ):
        assert not verify(provider, algorithm, public, PIECES, bad, context)
    # a public key alone cannot sign
    with pytest.raises(CryptoError) as exc:
        provider.create_signer(algorithm, public, context)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_mldsa_context_strings(provider: OpenSSLProvider) -> None:
    key = provider.generate_key("ML-DSA-65", P.SIGN)
    signature = sign(provider, "ML-DSA-65", key, [b"msg"], b"A" * 255)
    assert verify(provider, "ML-DSA-65", key, [b"msg"], signature, b"A" * 255)
    assert not verify(provider, "ML-DSA-65", key, [b"msg"], signature, b"A" * 254)
    assert not verify(provider, "ML-DSA-65", key, [b"msg"], signature, b"")
    for create in (provider.create_signer, provider.create_verifier):
        with pytest.raises(CryptoError) as exc:
            create("ML-DSA-65", key, b"A" * 256)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    ec_key = provider.generate_key("ECDSA-P256", P.SIGN)
    with pytest.raises(CryptoError) as exc:
        provider.create_signer("ECDSA-P256", ec_key, b"ctx")
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_mldsa_signing_is_hedged(provider: OpenSSLProvider) -> None:
    key = provider.generate_key("ML-DSA-44", P.SIGN)
    assert sign(provider, "ML-DSA-44", key, [b"m"]) != sign(provider, "ML-DSA-44", key, [b"m"])


def test_key_must_fit_the_algorithm(provider: OpenSSLProvider) -> None:
    p384 = provider.generate_key("ECDSA-P384", P.SIGN)
    ed = provider.generate_key("Ed25519", P.SIGN)
    aes = provider.generate_key("AES-256", P.ENCRYPT)
    for algorithm, key in [
        ("ECDSA-P256", p384),
        ("ML-DSA-65", ed),
        ("Ed25519", p384),
        ("HMAC-SHA-256", aes),
        ("HMAC-SHA-256", ed),
        ("RSA-PSS-SHA256", p384),
    ]:
        for create in (provider.create_signer, provider.create_verifier):
            with pytest.raises(CryptoError) as exc:
                create(algorithm, key, b"")
            assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_ecdh_p256_key_signs_ecdsa(provider: OpenSSLProvider) -> None:
    key = provider.generate_key("ECDH-P256", P.AGREE)
    signature = sign(provider, "ECDSA-P256", key, [b"m"])
    assert verify(provider, "ECDSA-P256", key, [b"m"], signature)


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("HMAC-SHA-256", hashlib.sha256),
        ("HMAC-SHA-384", hashlib.sha384),
        ("HMAC-SHA-512", hashlib.sha512),
    ],
)
def test_hmac_matches_stdlib(
    provider: OpenSSLProvider, algorithm: str, digest: Callable[..., object]
) -> None:
    raw = os.urandom(40)
    expected = hmac.new(raw, MESSAGE, digest).digest()  # type: ignore[arg-type]
    for key_algorithm in (algorithm, "GENERIC-SECRET"):
        key = provider.import_key(key_algorithm, raw, F.RAW, P.SIGN | P.VERIFY)
        assert sign(provider, algorithm, key, PIECES) == expected
        assert verify(provider, algorithm, key, PIECES, expected)
        assert provider.signature_size(algorithm, key) == len(expected)
        wrong = bytes([expected[0] ^ 1]) + expected[1:]
        assert not verify(provider, algorithm, key, PIECES, wrong)
        assert not verify(provider, algorithm, key, PIECES, expected + b"\x00")
        assert not verify(provider, algorithm, key, PIECES, b"")


def test_hmac_truncation_policy(
    provider: OpenSSLProvider, provider_factory: Callable[..., OpenSSLProvider]
) -> None:
    """Default min_mac_length 16: prefixes of 16+ bytes verify, shorter ones never do."""
    raw = os.urandom(32)
    expected = hmac.new(raw, b"msg", hashlib.sha256).digest()
    key = provider.import_key("HMAC-SHA-256", raw, F.RAW, P.VERIFY)
    assert provider.min_mac_length == 16
    for length in (16, 20, 31, 32):
        assert verify(provider, "HMAC-SHA-256", key, [b"msg"], expected[:length])
        bad = expected[: length - 1] + bytes([expected[length - 1] ^ 1])
        assert not verify(provider, "HMAC-SHA-256", key, [b"msg"], bad)
    for length in (1, 10, 15):
        assert not verify(provider, "HMAC-SHA-256", key, [b"msg"], expected[:length])
    strict = provider_factory(min_mac_length=24)
    key = strict.import_key("HMAC-SHA-256", raw, F.RAW, P.VERIFY)
    assert not verify(strict, "HMAC-SHA-256", key, [b"msg"], expected[:20])
    assert verify(strict, "HMAC-SHA-256", key, [b"msg"], expected[:24])


def test_pyca_rejects_what_provider_does_not_sign(provider: OpenSSLProvider) -> None:
    """Sanity: a provider signature over another message fails in pyca too."""
    key = provider.generate_key("Ed25519", P.SIGN)
    signature = sign(provider, "Ed25519", key, [b"one"])
    public = ser.load_der_public_key(provider.export_public_key(key))
    assert isinstance(public, ed25519.Ed25519PublicKey)
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"two")
