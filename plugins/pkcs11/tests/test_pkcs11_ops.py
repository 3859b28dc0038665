"""Operations through the provider SDK on a real SoftHSM2 token: digests, AES, HMAC, ECDSA,
Ed25519, RSA-PSS, random; each checked against pyca/hashlib (parity)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import padding as apad
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptostack_pkcs11.provider import PKCS11Provider

from cryptostack_core.sdk import Capability, CipherDirection, CryptoError, ErrorCode, KeyFormat, Operation
from cryptostack_core.sdk import KeyOperationPermission as P

ProviderFactory = Callable[..., PKCS11Provider]

ENC, DEC = CipherDirection.ENCRYPT, CipherDirection.DECRYPT
AES_USE = P.ENCRYPT | P.DECRYPT


def digest(provider: PKCS11Provider, algorithm: str, *chunks: bytes) -> bytes:
    op = provider.create_hash(algorithm)
    for chunk in chunks:
        op.update(chunk)
    return op.finalize()


def crypt(
    provider: PKCS11Provider,
    algorithm: str,
    key: object,
    direction: CipherDirection,
    iv: bytes,
    *chunks: bytes,
    aad: bytes = b"",
    tag_length: int = 16,
) -> bytes:
    op = provider.create_cipher(algorithm, key, direction, iv, tag_length)  # type: ignore[arg-type]
    if aad:
        op.update_aad(aad)
    out = b"".join(op.update(chunk) for chunk in chunks)
    return out + op.finalize()


def sign(provider: PKCS11Provider, algorithm: str, key: object, *chunks: bytes) -> bytes:
    op = provider.create_signer(algorithm, key, b"")  # type: ignore[arg-type]
    for chunk in chunks:
        op.update(chunk)
    return op.finalize()


def verify(provider: PKCS11Provider, algorithm: str, key: object, signature: bytes, *chunks: bytes) -> bool:
    op = provider.create_verifier(algorithm, key, b"")  # type: ignore[arg-type]
    for chunk in chunks:
        op.update(chunk)
    return op.finalize(signature)


# --- capabilities ---------------------------------------------------------------------------


def test_capabilities_come_from_the_mechanism_list(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    caps = set(provider.capabilities())
    for name in ("SHA-224", "SHA-256", "SHA-384", "SHA-512"):
        assert Capability(name, Operation.HASH) in caps
    for name in (
        "AES-128-GCM",
        "AES-256-CBC",
        "AES-256-CTR",
        "HMAC-SHA-256",
        "ECDSA-P256",
        "ECDSA-P384",
        "Ed25519",
        "RSA-PSS-SHA256",
    ):
        op = Operation.ENCRYPT if name.startswith("AES") else Operation.SIGN
        assert Capability(name, op) in caps, name
    for name in ("AES-256", "ECDSA-P256", "Ed25519", "RSA-2048", "HMAC-SHA-512"):
        assert Capability(name, Operation.GENERATE_KEY) in caps
    # SoftHSM2 has no SHA-3, ChaCha20 or ML-DSA: nothing claims them
    claimed = {c.algorithm for c in caps}
    assert not claimed & {"SHA3-256", "ChaCha20-Poly1305", "ML-DSA-65", "AES-256-CFB"}
    assert provider.describe()["mechanisms"][0] == "CKM_RSA_PKCS_KEY_PAIR_GEN"

    # a module without a mechanism advertises less: excluding it has the same effect
    reduced = make_provider(12, exclude_mechanisms=["CKM_AES_GCM", "CKM_ECDSA"])
    reduced_caps = set(reduced.capabilities())
    assert Capability("AES-256-GCM", Operation.ENCRYPT) not in reduced_caps
    assert Capability("ECDSA-P256", Operation.SIGN) not in reduced_caps
    assert Capability("AES-256-CBC", Operation.ENCRYPT) in reduced_caps
    with pytest.raises(CryptoError) as err:
        reduced.create_cipher("AES-256-GCM", reduced.generate_key("AES-256", AES_USE), ENC, bytes(12), 16)
    assert err.value.code is ErrorCode.UNSUPPORTED_ALGORITHM


# --- digests --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-224", "SHA-256", "SHA-384", "SHA-512"])
def test_digests_match_hashlib(provider: PKCS11Provider, algorithm: str) -> None:
    name = algorithm.replace("-", "").lower()
    for chunks in ([], [b""], [b"abc"], [b"a" * 1000, b"b" * 7, b""]):
        assert digest(provider, algorithm, *chunks) == hashlib.new(name, b"".join(chunks)).digest()


def test_long_digest_streams_through_a_token_session(make_provider: ProviderFactory) -> None:
    provider = make_provider(stream_buffer=1024)
    data = os.urandom(10_000)
    chunks = [data[i : i + 700] for i in range(0, len(data), 700)]
    assert digest(provider, "SHA-256", *chunks) == hashlib.sha256(data).digest()


def test_unsupported_hash(provider: PKCS11Provider) -> None:
    with pytest.raises(CryptoError) as err:
        provider.create_hash("SHA3-256")
    assert err.value.code is ErrorCode.UNSUPPORTED_ALGORITHM


# --- AES ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_gcm_interoperates_with_pyca(provider: PKCS11Provider, bits: int) -> None:
    material = os.urandom(bits // 8)
    key = provider.import_key(f"AES-{bits}", material, KeyFormat.RAW, AES_USE)
    iv, aad, msg = os.urandom(12), b"header", os.urandom(100)
    ct = crypt(provider, f"AES-{bits}-GCM", key, ENC, iv, msg[:33], msg[33:], aad=aad)
    assert ct == AESGCM(material).encrypt(iv, msg, aad)
    assert crypt(provider, f"AES-{bits}-GCM", key, DEC, iv, ct, aad=aad) == msg
    # short tag, other IV length
    iv16 = os.urandom(16)
    ct8 = crypt(provider, f"AES-{bits}-GCM", key, ENC, iv16, msg, tag_length=8)
    enc = Cipher(algorithms.AES(material), modes.GCM(iv16)).encryptor()
    assert ct8 == enc.update(msg) + enc.finalize() + enc.tag[:8]
    assert crypt(provider, f"AES-{bits}-GCM", key, DEC, iv16, ct8, tag_length=8) == msg


def test_aes_gcm_bad_tag_is_authentication_failed(provider: PKCS11Provider) -> None:
    key = provider.generate_key("AES-256", AES_USE)
    iv = os.urandom(12)
    ct = bytearray(crypt(provider, "AES-256-GCM", key, ENC, iv, b"secret", aad=b"a"))
    ct[-1] ^= 1
    op = provider.create_cipher("AES-256-GCM", key, DEC, iv, 16)
    op.update_aad(b"a")
    assert op.update(bytes(ct)) == b""  # nothing before the tag is checked
    with pytest.raises(CryptoError) as err:
        op.finalize()
    assert err.value.code is ErrorCode.AUTHENTICATION_FAILED
    with pytest.raises(CryptoError) as err:  # wrong AAD
        crypt(provider, "AES-256-GCM", key, DEC, iv, bytes(ct[:-1]) + bytes([ct[-1] ^ 1]), aad=b"b")
    assert err.value.code is ErrorCode.AUTHENTICATION_FAILED


def test_aes_gcm_parameter_policy(provider: PKCS11Provider) -> None:
    key = provider.generate_key("AES-128", AES_USE)
    for iv, tag in ((b"", 16), (bytes(7), 16), (bytes(129), 16), (bytes(12), 11), (bytes(12), 17)):
        with pytest.raises(CryptoError) as err:
            provider.create_cipher("AES-128-GCM", key, ENC, iv, tag)
        assert err.value.code is ErrorCode.INVALID_ARGUMENT
    op = provider.create_cipher("AES-128-GCM", key, ENC, bytes(12), 16)
    op.update(b"x")
    with pytest.raises(CryptoError) as err:
        op.update_aad(b"late")
    assert err.value.code is ErrorCode.INVALID_STATE
    with pytest.raises(CryptoError) as err:
        provider.create_cipher("AES-256-GCM", key, ENC, bytes(12), 16)  # AES-128 key
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("stream_buffer", [65536, 32])
def test_aes_cbc_and_ctr_match_pyca(make_provider: ProviderFactory, stream_buffer: int) -> None:
    provider = make_provider(stream_buffer=stream_buffer)
    material = os.urandom(32)
    key = provider.import_key("AES-256", material, KeyFormat.RAW, AES_USE)
    iv = os.urandom(16)
    msg = os.urandom(1000)
    chunks = [msg[:1], msg[1:100], msg[100:777], msg[777:]]
    padder = padding.PKCS7(128).padder()
    padded = padder.update(msg) + padder.finalize()
    enc = Cipher(algorithms.AES(material), modes.CBC(iv)).encryptor()
    expected = enc.update(padded) + enc.finalize()
    assert crypt(provider, "AES-256-CBC", key, ENC, iv, *chunks) == expected
    assert crypt(provider, "AES-256-CBC", key, DEC, iv, expected[:50], expected[50:]) == msg
    ctr = Cipher(algorithms.AES(material), modes.CTR(iv)).encryptor()
    expected = ctr.update(msg) + ctr.finalize()
    assert crypt(provider, "AES-256-CTR", key, ENC, iv, *chunks) == expected
    assert crypt(provider, "AES-256-CTR", key, DEC, iv, expected) == msg
    if stream_buffer == 32:  # output comes back from update once a chunk went through
        op = provider.create_cipher("AES-256-CTR", key, ENC, iv, 16)
        assert op.update(msg[:100]) == expected[:100]


def test_aes_ctr_counter_may_not_wrap(provider: PKCS11Provider) -> None:
    """Policy difference from pyca (which wraps modulo 2**128): PKCS#11 forbids reusing a
    counter value, so a message that would run the 128-bit counter block past its last value
    is refused. With random IVs that needs ~2**128 blocks; only crafted IVs meet it."""
    material = os.urandom(16)
    key = provider.import_key("AES-128", material, KeyFormat.RAW, AES_USE)
    iv = b"\xff" * 15 + b"\xfe"  # two counter values left
    ctr = Cipher(algorithms.AES(material), modes.CTR(iv)).encryptor()
    msg = os.urandom(32)
    assert crypt(provider, "AES-128-CTR", key, ENC, iv, msg) == ctr.update(msg) + ctr.finalize()
    with pytest.raises(CryptoError) as err:
        crypt(provider, "AES-128-CTR", key, ENC, iv, msg + b"!")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_aes_cbc_bad_padding_and_length(provider: PKCS11Provider) -> None:
    key = provider.generate_key("AES-128", AES_USE)
    iv = bytes(16)
    ct = bytearray(crypt(provider, "AES-128-CBC", key, ENC, iv, b"0123456789"))
    ct[-1] ^= 0x5A
    for bad in (bytes(ct), bytes(ct[:-1]), b""):
        with pytest.raises(CryptoError) as err:
            crypt(provider, "AES-128-CBC", key, DEC, iv, bad)
        assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        provider.create_cipher("AES-128-CBC", key, ENC, bytes(12), 16)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_token_enforces_key_usage(provider: PKCS11Provider) -> None:
    """The token itself refuses what CKA_DECRYPT=false forbids (not just the daemon)."""
    key = provider.generate_key("AES-256", P.ENCRYPT)
    ct = crypt(provider, "AES-256-CBC", key, ENC, bytes(16), b"data")
    with pytest.raises(CryptoError) as err:
        crypt(provider, "AES-256-CBC", key, DEC, bytes(16), ct)
    assert err.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED


# --- HMAC -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HMAC-SHA-256", "HMAC-SHA-384", "HMAC-SHA-512"])
def test_hmac_matches_python(provider: PKCS11Provider, algorithm: str) -> None:
    name = algorithm.rsplit("-", 2)[1].lower() + algorithm.rsplit("-", 1)[1]
    for length in (16, 20, 32, 64, 65, 200):  # shorter than SoftHSM's minimum included
        material = os.urandom(length)
        key = provider.import_key(algorithm, material, KeyFormat.RAW, P.MAC)
        msg = os.urandom(300)
        tag = sign(provider, algorithm, key, msg[:10], msg[10:])
        assert tag == hmac.new(material, msg, name).digest(), length
        assert verify(provider, algorithm, key, tag, msg)
        assert verify(provider, algorithm, key, tag[:16], msg)  # truncated to min_mac_length
        assert not verify(provider, algorithm, key, tag[:15], msg)  # shorter than the policy
        assert not verify(provider, algorithm, key, bytes(len(tag)), msg)
        assert not verify(provider, algorithm, key, b"", msg)
        assert not verify(provider, algorithm, key, tag + b"\0", msg)


def test_hmac_generated_and_verify_only_keys(
    make_provider: ProviderFactory, softhsm_token: Any, list_token_objects: Any
) -> None:
    provider = make_provider(stream_buffer=100)
    key = provider.generate_key("HMAC-SHA-256", P.SIGN | P.VERIFY)
    msg = os.urandom(1000)  # longer than stream_buffer: streamed into the token
    tag = sign(provider, "HMAC-SHA-256", key, msg[:400], msg[400:])
    assert verify(provider, "HMAC-SHA-256", key, tag, msg)
    material = os.urandom(32)
    verify_only = provider.import_key("HMAC-SHA-256", material, KeyFormat.RAW, P.VERIFY)
    good = hmac.new(material, msg, "sha256").digest()
    assert verify(provider, "HMAC-SHA-256", verify_only, good, msg[:500], msg[500:])
    assert not verify(provider, "HMAC-SHA-256", verify_only, bytes(32), msg)
    # verifying a MAC is computing it: a verify-only HMAC key has CKA_SIGN (the daemon
    # refuses to sign with it), while an AES key without SIGN does not
    provider.persist_key(verify_only, "verify-only")
    provider.persist_key(provider.generate_key("AES-128", P.VERIFY), "aes")
    flags = {o["label"]: (o["sign"], o["verify"]) for o in list_token_objects(softhsm_token)}
    assert flags == {"cryptostack:verify-only": (1, 1), "cryptostack:aes": (0, 1)}
    with pytest.raises(CryptoError) as err:
        provider.import_key("HMAC-SHA-256", bytes(15), KeyFormat.RAW, P.MAC)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


# --- signatures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "curve", "hash_cls"),
    [("ECDSA-P256", ec.SECP256R1, hashes.SHA256), ("ECDSA-P384", ec.SECP384R1, hashes.SHA384)],
)
def test_ecdsa_interoperates_with_pyca(
    provider: PKCS11Provider,
    algorithm: str,
    curve: type[ec.EllipticCurve],
    hash_cls: type[hashes.HashAlgorithm],
) -> None:
    key = provider.generate_key(algorithm, P.SIGN | P.VERIFY)
    msg = os.urandom(200)
    sig = sign(provider, algorithm, key, msg[:5], msg[5:])
    assert sig[0] == 0x30  # DER
    public = ser.load_der_public_key(provider.export_public_key(key))
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, curve)
    public.verify(sig, msg, ec.ECDSA(hash_cls()))  # token-signed verifies in pyca
    assert verify(provider, algorithm, key, sig, msg)
    assert not verify(provider, algorithm, key, sig, msg + b"x")
    assert not verify(provider, algorithm, key, sig[:-1], msg)  # malformed DER
    assert not verify(provider, algorithm, key, b"", msg)
    # pyca-signed verifies on the token, through an imported public key
    private = ec.generate_private_key(curve())
    theirs = private.sign(msg, ec.ECDSA(hash_cls()))
    spki = private.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    imported = provider.import_key(algorithm, spki, KeyFormat.SPKI_DER, P.VERIFY)
    assert not imported.has_private
    assert verify(provider, algorithm, imported, theirs, msg)
    assert not verify(provider, algorithm, imported, sig, msg)
    with pytest.raises(CryptoError) as err:
        provider.create_signer(algorithm, imported, b"")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    # and an imported private key signs on the token
    pkcs8 = private.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    pair = provider.import_key(algorithm, pkcs8, KeyFormat.PKCS8_DER, P.SIGN)
    private.public_key().verify(sign(provider, algorithm, pair, msg), msg, ec.ECDSA(hash_cls()))


def test_ecdsa_key_checks(provider: PKCS11Provider) -> None:
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(CryptoError) as err:
        provider.import_key("ECDSA-P256", p384, KeyFormat.SPKI_DER, P.VERIFY)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        provider.import_key("ECDSA-P256", b"\x30\x03garbage", KeyFormat.SPKI_DER, P.VERIFY)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    key = provider.generate_key("ECDSA-P256", P.SIGN | P.VERIFY)
    with pytest.raises(CryptoError) as err:
        provider.create_signer("ECDSA-P384", key, b"")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        provider.create_signer("ECDSA-P256", key, b"ctx")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    raw = provider.export_public_key(key, KeyFormat.RAW)
    assert len(raw) == 65 and raw[0] == 4


def test_ed25519_interoperates_with_pyca(provider: PKCS11Provider) -> None:
    key = provider.generate_key("Ed25519", P.SIGN | P.VERIFY)
    msg = os.urandom(77)
    sig = sign(provider, "Ed25519", key, msg[:7], msg[7:])
    public = ed25519.Ed25519PublicKey.from_public_bytes(provider.export_public_key(key, KeyFormat.RAW))
    public.verify(sig, msg)
    assert verify(provider, "Ed25519", key, sig, msg)
    assert not verify(provider, "Ed25519", key, sig, msg[1:])
    private = ed25519.Ed25519PrivateKey.generate()
    theirs = private.sign(msg)
    imported = provider.import_key(
        "Ed25519", private.public_key().public_bytes_raw(), KeyFormat.RAW, P.VERIFY
    )
    assert verify(provider, "Ed25519", imported, theirs, msg)
    pair = provider.import_key("Ed25519", private.private_bytes_raw(), KeyFormat.RAW, P.SIGN)
    assert sign(provider, "Ed25519", pair, msg) == theirs  # Ed25519 is deterministic


def test_rsa_pss_interoperates_with_pyca(provider: PKCS11Provider) -> None:
    key = provider.generate_key("RSA-2048", P.SIGN | P.VERIFY)
    assert provider.signature_size("RSA-PSS-SHA256", key) == 256
    msg = os.urandom(500)
    sig = sign(provider, "RSA-PSS-SHA256", key, msg)
    public = ser.load_der_public_key(provider.export_public_key(key))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    pss = apad.PSS(mgf=apad.MGF1(hashes.SHA256()), salt_length=32)
    public.verify(sig, msg, pss, hashes.SHA256())
    assert verify(provider, "RSA-PSS-SHA256", key, sig, msg)
    assert not verify(provider, "RSA-PSS-SHA256", key, sig, msg + b"!")
    assert not verify(provider, "RSA-PSS-SHA256", key, sig[:-1], msg)
    private = rsa.generate_private_key(65537, 2048)
    theirs = private.sign(msg, pss, hashes.SHA256())
    spki = private.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    imported = provider.import_key("RSA-2048", spki, KeyFormat.SPKI_DER, P.VERIFY)
    assert verify(provider, "RSA-PSS-SHA256", imported, theirs, msg)
    with pytest.raises(CryptoError) as err:
        provider.import_key("RSA-3072", spki, KeyFormat.SPKI_DER, P.VERIFY)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


# --- random ---------------------------------------------------------------------------------


def test_random_bytes(provider: PKCS11Provider) -> None:
    first, second = provider.random_bytes(32), provider.random_bytes(32)
    assert len(first) == 32 and first != second
    assert provider.random_bytes(0) == b""
    with pytest.raises(CryptoError) as err:
        provider.random_bytes(-1)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
