"""Provider-level behaviour: capabilities, options, run_inline policy, hashing, latency."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import pytest

from cryptostack_core.sdk import REGISTRY, Capability, CryptoError, ErrorCode, Operation
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_openssl import OpenSSLProvider

Op = Operation
HASHES = {
    "SHA-224": hashlib.sha224,
    "SHA-256": hashlib.sha256,
    "SHA-384": hashlib.sha384,
    "SHA-512": hashlib.sha512,
    "SHA3-224": hashlib.sha3_224,
    "SHA3-256": hashlib.sha3_256,
    "SHA3-384": hashlib.sha3_384,
    "SHA3-512": hashlib.sha3_512,
}
CIPHERS = [f"AES-{b}-{m}" for b in (128, 192, 256) for m in ("CBC", "GCM", "CTR")] + [
    "ChaCha20-Poly1305"
]
SIGNATURES = [
    "HMAC-SHA-256",
    "HMAC-SHA-384",
    "HMAC-SHA-512",
    "ECDSA-P256",
    "ECDSA-P384",
    "Ed25519",
    "RSA-PSS-SHA256",
    "ML-DSA-44",
    "ML-DSA-65",
    "ML-DSA-87",
]
KEY_ALGORITHMS = [
    "AES-128",
    "AES-192",
    "AES-256",
    "ChaCha20-Poly1305",
    "HMAC-SHA-256",
    "HMAC-SHA-384",
    "HMAC-SHA-512",
    "GENERIC-SECRET",
    "ECDSA-P256",
    "ECDSA-P384",
    "ECDH-P256",
    "Ed25519",
    "X25519",
    "RSA-2048",
    "RSA-3072",
    "RSA-4096",
    "ML-DSA-44",
    "ML-DSA-65",
    "ML-DSA-87",
    "ML-KEM-768",
    "ML-KEM-1024",
]
HYBRID_KEMS = ["X-Wing", "X25519MLKEM768"]
COMPOSITES = [
    f"ML-DSA-{pairing}"
    for pairing in (
        "44-RSA2048-PSS-SHA256",
        "44-RSA2048-PKCS15-SHA256",
        "44-Ed25519-SHA512",
        "44-ECDSA-P256-SHA256",
        "65-RSA3072-PSS-SHA512",
        "65-RSA3072-PKCS15-SHA512",
        "65-RSA4096-PSS-SHA512",
        "65-RSA4096-PKCS15-SHA512",
        "65-ECDSA-P256-SHA512",
        "65-ECDSA-P384-SHA512",
        "65-ECDSA-brainpoolP256r1-SHA512",
        "65-Ed25519-SHA512",
        "87-ECDSA-P384-SHA512",
        "87-ECDSA-brainpoolP384r1-SHA512",
        "87-Ed448-SHAKE256",
        "87-RSA3072-PSS-SHA512",
        "87-RSA4096-PSS-SHA512",
        "87-ECDSA-P521-SHA512",
    )
]


def expected_capabilities() -> set[Capability]:
    pairs = {(h, Op.HASH) for h in HASHES}
    pairs |= {(c, op) for c in CIPHERS for op in (Op.ENCRYPT, Op.DECRYPT)}
    pairs |= {(s, op) for s in SIGNATURES + COMPOSITES for op in (Op.SIGN, Op.VERIFY)}
    pairs |= {
        (k, op)
        for k in ["ML-KEM-768", "ML-KEM-1024", *HYBRID_KEMS]
        for op in (Op.ENCAPSULATE, Op.DECAPSULATE)
    }
    pairs |= {("X25519", Op.AGREE), ("ECDH-P256", Op.AGREE), ("RANDOM", Op.RANDOM)}
    pairs |= {(f"HKDF-SHA-{n}", Op.DERIVE) for n in (256, 384, 512)}
    pairs |= {
        (k, op)
        for k in KEY_ALGORITHMS + HYBRID_KEMS + COMPOSITES
        for op in (Op.GENERATE_KEY, Op.IMPORT_KEY)
    }
    return {Capability(a, op) for a, op in pairs}


def test_capabilities_are_exactly_the_documented_set(provider: OpenSSLProvider) -> None:
    capabilities = list(provider.capabilities())
    assert len(capabilities) == len(set(capabilities))
    assert set(capabilities) == expected_capabilities()
    for capability in capabilities:  # every name is canonical in the registry
        assert REGISTRY.canonical(capability.algorithm) == capability.algorithm
    assert provider.supports("ML-DSA-65", Op.SIGN)
    assert not provider.supports("ML-KEM-512", Op.ENCAPSULATE)
    assert not provider.supports("AES-256-CFB", Op.ENCRYPT)


def test_entry_point_and_description(provider: OpenSSLProvider) -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="cryptostack.providers") if e.name == "openssl"]
    assert ep.load() is OpenSSLProvider and OpenSSLProvider.name == "openssl"
    info = provider.describe()
    assert info["openssl"].startswith("OpenSSL") and info["post_quantum"] is True
    assert int(info["cryptography"].split(".")[0]) >= 50


@pytest.mark.parametrize(
    "options",
    [{"min_mac_length": 9}, {"min_mac_length": "16"}, {"min_mac_length": True}, {"pin": "1234"}],
)
def test_bad_options_are_refused(
    provider_factory: Callable[..., OpenSSLProvider], options: dict[str, object]
) -> None:
    with pytest.raises(CryptoError) as exc:
        provider_factory(**options)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_run_inline_policy(provider: OpenSSLProvider) -> None:
    inline = provider.run_inline
    for op in (Op.HASH, Op.ENCRYPT, Op.DECRYPT, Op.RANDOM):
        assert inline(op, 0) and inline(op, 8192) and not inline(op, 8193)
    for op in (Op.DERIVE, Op.ENCAPSULATE, Op.DECAPSULATE):
        assert inline(op, 0)
    for op in (Op.SIGN, Op.VERIFY):
        assert inline(op, 1) and inline(op, 8192) and not inline(op, 8193)  # updates
        assert not inline(op, 0)  # maybe a finalisation: could be RSA-4096 or ML-DSA
        assert inline(op, 0, algorithm="HMAC-SHA-256")
        assert not inline(op, 0, algorithm="ML-DSA-87")
    for op in (Op.AGREE, Op.GENERATE_KEY, Op.IMPORT_KEY):
        assert not inline(op, 0)
    assert inline(Op.GENERATE_KEY, 0, algorithm="AES-256")
    assert not inline(Op.GENERATE_KEY, 0, algorithm="RSA-2048")


@pytest.mark.parametrize("algorithm", sorted(HASHES))
def test_hashes_match_hashlib(provider: OpenSSLProvider, algorithm: str) -> None:
    data = os.urandom(5000)
    op = provider.create_hash(algorithm)
    for i in range(0, len(data), 333):
        op.update(memoryview(data)[i : i + 333])
    assert op.finalize() == HASHES[algorithm](data).digest()
    assert REGISTRY.get(algorithm).digest_size == HASHES[algorithm]().digest_size


def test_unknown_algorithms_are_unsupported(provider: OpenSSLProvider) -> None:
    with pytest.raises(CryptoError) as exc:
        provider.create_hash("SHAKE-128")
    assert exc.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
    with pytest.raises(CryptoError) as exc:
        provider.generate_key("SLH-DSA-SHA2-128s", P.SIGN)
    assert exc.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
