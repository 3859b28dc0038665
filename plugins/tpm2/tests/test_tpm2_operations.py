"""Operations of the TPM2 provider against a real swtpm, checked against pyca/hashlib."""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptostack_tpm2.provider import TPM2Provider
from cryptostack_tpm2.signatures import pss_salt_length

from cryptostack_core.sdk import CipherDirection, CryptoError, ErrorCode, KeyFormat, Operation
from cryptostack_core.sdk import KeyOperationPermission as P


def _sign(tpm: TPM2Provider, algorithm: str, key: object, message: bytes) -> bytes:
    signer = tpm.create_signer(algorithm, key, b"")  # type: ignore[arg-type]
    signer.update(message)
    return signer.finalize()


def _verify(tpm: TPM2Provider, algorithm: str, key: object, message: bytes, signature: bytes) -> bool:
    verifier = tpm.create_verifier(algorithm, key, b"")  # type: ignore[arg-type]
    verifier.update(message)
    return verifier.finalize(signature)


def _hash(tpm: TPM2Provider, algorithm: str, chunks: list[bytes]) -> bytes:
    op = tpm.create_hash(algorithm)
    for chunk in chunks:
        op.update(chunk)
    return op.finalize()


def _split(data: bytes, rng: random.Random) -> list[bytes]:
    chunks, i = [], 0
    while i < len(data):
        n = rng.choice([1, 7, 16, 100, 1023, 1024, 1025, 5000])
        chunks.append(data[i : i + n])
        i += n
    return chunks


# --- capabilities ------------------------------------------------------------------------


def test_capabilities_are_discovered_from_the_tpm(tpm: TPM2Provider) -> None:
    facts = tpm.info.facts
    claimed = {(c.algorithm, c.operation) for c in tpm.capabilities()}
    # swtpm 0.7.1 (libtpms 0.9): what it has ...
    for pair in [
        ("SHA-256", Operation.HASH),
        ("SHA-384", Operation.HASH),
        ("ECDSA-P256", Operation.SIGN),
        ("ECDSA-P384", Operation.VERIFY),
        ("RSA-PSS-SHA256", Operation.SIGN),
        ("RSA-2048", Operation.GENERATE_KEY),
        ("HMAC-SHA-256", Operation.SIGN),
        ("AES-256-CFB", Operation.ENCRYPT),
        ("AES-128-CBC", Operation.DECRYPT),
        ("AES-256-CTR", Operation.ENCRYPT),
        ("RANDOM", Operation.RANDOM),
    ]:
        assert pair in claimed, pair
    # ... and what it lacks, found by TPM2_TestParms / the algorithm list, so not claimed
    assert 192 not in facts.aes_key_bits and ("AES-192-CBC", Operation.ENCRYPT) not in claimed
    assert 4096 not in facts.rsa_key_bits and ("RSA-4096", Operation.GENERATE_KEY) not in claimed
    assert ("SHA3-256", Operation.HASH) not in claimed
    assert ("AES-256-GCM", Operation.ENCRYPT) not in claimed  # the TPM has no GCM
    assert facts.transient_slots == 3 and facts.input_buffer == 1024
    assert tpm.describe()["manufacturer"] == "IBM"


# --- random and hashes -------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 32, 33, 64, 65, 1000])
def test_random_bytes_loops_over_getrandom(tpm: TPM2Provider, length: int) -> None:
    out = tpm.random_bytes(length)
    assert len(out) == length
    if length >= 32:
        assert out != tpm.random_bytes(length)


@pytest.mark.parametrize("algorithm", ["SHA-256", "SHA-384", "SHA-512"])
@pytest.mark.parametrize("size", [0, 64, 1024, 1025, 3000, 100_000])
def test_tpm_digests_equal_hashlib(tpm: TPM2Provider, algorithm: str, size: int) -> None:
    data = os.urandom(size)
    expected = hashlib.new(algorithm.replace("-", "").lower(), data).digest()
    assert _hash(tpm, algorithm, [data]) == expected
    assert _hash(tpm, algorithm, _split(data, random.Random(size))) == expected


def test_abandoned_hash_sequences_release_their_slots(tpm: TPM2Provider) -> None:
    # 10 long digests opened and dropped: the TPM has 3 slots, so this only works if
    # sequences are swapped out and flushed when their operation objects go away.
    opened = [tpm.create_hash("SHA-256") for _ in range(10)]
    for op in opened:
        op.update(b"a" * 40_000)  # > one stream batch: a TPM sequence exists
    del opened, op
    assert _hash(tpm, "SHA-256", [b"b" * 50_000]) == hashlib.sha256(b"b" * 50_000).digest()
    assert tpm.host.call("ping")["transient_in_tpm"] <= 3


def test_interleaved_long_hashes_swap_sequences(tpm: TPM2Provider) -> None:
    # Six TPM hash sequences open at once on a TPM with three object slots: each update
    # swaps sequences in and out (ContextSave/ContextLoad) and the digests stay right.
    ops = [tpm.create_hash("SHA-256") for _ in range(6)]
    fed: list[list[bytes]] = [[] for _ in ops]
    for _round in range(3):
        for op, seen in zip(ops, fed):
            chunk = os.urandom(40_000)  # > one stream batch: a worker call per update
            op.update(chunk)
            seen.append(chunk)
    assert [op.finalize() for op in ops] == [hashlib.sha256(b"".join(s)).digest() for s in fed]
    stats = tpm.host.call("ping")
    assert stats["evictions"] > 0 and stats["transient_in_tpm"] <= 3


# --- HMAC --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HMAC-SHA-256", "HMAC-SHA-384", "HMAC-SHA-512"])
@pytest.mark.parametrize("key_size", [16, 32, 129, 300])
def test_hmac_equals_software(tpm: TPM2Provider, algorithm: str, key_size: int) -> None:
    secret = os.urandom(key_size)
    key = tpm.import_key(algorithm, secret, KeyFormat.RAW, P.SIGN | P.VERIFY)
    assert not key.extractable
    digest = algorithm[5:].replace("-", "").lower()
    for size in (0, 100, 1024, 5000):
        message = os.urandom(size)
        mac = _sign(tpm, algorithm, key, message)
        assert mac == hmac.new(secret, message, digest).digest()
        assert _verify(tpm, algorithm, key, message, mac)
        assert _verify(tpm, algorithm, key, message, mac[:16])  # truncated, >= minimum
        assert not _verify(tpm, algorithm, key, message, mac[:15])
        assert not _verify(tpm, algorithm, key, message + b"x", mac)
    tpm.release_key(key)


def test_generated_hmac_key_signs_and_verifies(tpm: TPM2Provider) -> None:
    key = tpm.generate_key("HMAC-SHA-256", P.MAC | P.SIGN | P.VERIFY)
    mac = _sign(tpm, "HMAC-SHA-256", key, b"hello")
    assert len(mac) == 32 and _verify(tpm, "HMAC-SHA-256", key, b"hello", mac)
    other = tpm.generate_key("HMAC-SHA-256", P.MAC)
    assert _sign(tpm, "HMAC-SHA-256", other, b"hello") != mac


def test_hmac_key_is_bound_to_its_hash(tpm: TPM2Provider) -> None:
    key = tpm.import_key("HMAC-SHA-256", os.urandom(32), KeyFormat.RAW, P.MAC | P.SIGN)
    with pytest.raises(CryptoError) as err:
        tpm.create_signer("HMAC-SHA-512", key, b"")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    assert not tpm.supports("GENERIC-SECRET", Operation.IMPORT_KEY)


# --- ECDSA -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm,curve,digest",
    [
        ("ECDSA-P256", ec.SECP256R1(), hashes.SHA256()),
        ("ECDSA-P384", ec.SECP384R1(), hashes.SHA384()),
    ],
)
def test_ecdsa_tpm_signatures_verify_in_pyca(
    tpm: TPM2Provider, algorithm: str, curve: ec.EllipticCurve, digest: hashes.HashAlgorithm
) -> None:
    key = tpm.generate_key(algorithm, P.SIGN | P.VERIFY)
    assert key.has_private and not key.extractable
    public = serialization.load_der_public_key(tpm.export_public_key(key))
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == curve.name
    for size in (0, 64, 5000):
        message = os.urandom(size)
        signature = _sign(tpm, algorithm, key, message)
        decode_dss_signature(signature)  # DER
        assert len(signature) <= tpm.signature_size(algorithm, key)
        public.verify(signature, message, ec.ECDSA(digest))
        assert _verify(tpm, algorithm, key, message, signature)
        assert not _verify(tpm, algorithm, key, message + b"!", signature)


def test_ecdsa_verification_of_imported_public_keys(tpm: TPM2Provider) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = tpm.import_key("ECDSA-P256", spki, KeyFormat.SPKI_DER, P.VERIFY)
    assert not key.has_private
    signature = private.sign(b"message", ec.ECDSA(hashes.SHA256()))
    assert _verify(tpm, "ECDSA-P256", key, b"message", signature)
    r, s = decode_dss_signature(signature)
    assert not _verify(tpm, "ECDSA-P256", key, b"message", encode_dss_signature(r, s ^ 1))
    assert not _verify(tpm, "ECDSA-P256", key, b"message", signature + b"\0")  # not DER
    assert not _verify(tpm, "ECDSA-P256", key, b"message", b"")
    assert not _verify(tpm, "ECDSA-P256", key, b"message", encode_dss_signature(r, 0))
    with pytest.raises(CryptoError) as err:
        tpm.create_signer("ECDSA-P256", key, b"")
    assert err.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
    with pytest.raises(CryptoError) as err:
        tpm.import_key("ECDSA-P384", spki, KeyFormat.SPKI_DER, P.VERIFY)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        tpm.import_key("ECDSA-P256", b"\x30\x03garbage", KeyFormat.SPKI_DER, P.VERIFY)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_imported_private_keys_sign_inside_the_tpm(tpm: TPM2Provider) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = tpm.import_key("ECDSA-P384", pkcs8, KeyFormat.PKCS8_DER, P.SIGN | P.VERIFY)
    assert key.has_private and not key.extractable
    signature = _sign(tpm, "ECDSA-P384", key, b"imported")
    private.public_key().verify(signature, b"imported", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(CryptoError) as err:
        tpm.export_key(key, KeyFormat.PKCS8_DER)
    assert err.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED


def test_keys_with_leading_zero_bytes_import(tpm: TPM2Provider) -> None:
    # tpm2-pytss drops leading zeros of ECC values; the TPM wants full-length coordinates
    # and scalars (found by Wycheproof's "small x/y" public keys).
    private = ec.derive_private_key(12345, ec.SECP256R1())  # 30 leading zero bytes
    pkcs8 = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = tpm.import_key("ECDSA-P256", pkcs8, KeyFormat.PEM, P.SIGN | P.VERIFY)
    private.public_key().verify(_sign(tpm, "ECDSA-P256", key, b"z"), b"z", ec.ECDSA(hashes.SHA256()))


# --- RSA-PSS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key(tpm: TPM2Provider) -> object:
    return tpm.generate_key("RSA-2048", P.SIGN | P.VERIFY)


def test_rsa_pss_uses_digest_length_salt(tpm: TPM2Provider, rsa_key: object) -> None:
    public = serialization.load_der_public_key(tpm.export_public_key(rsa_key))  # type: ignore
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    signature = _sign(tpm, "RSA-PSS-SHA256", rsa_key, b"pss message")
    assert len(signature) == 256 == tpm.signature_size("RSA-PSS-SHA256", rsa_key)  # type: ignore
    public.verify(signature, b"pss message", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(InvalidSignature):  # the TPM's salt is 32, not the maximum (222)
        public.verify(
            signature, b"pss message", padding.PSS(padding.MGF1(hashes.SHA256()), 222), hashes.SHA256()
        )
    numbers = public.public_numbers()
    assert pss_salt_length(signature, numbers.n, numbers.e, "sha256") == 32
    assert _verify(tpm, "RSA-PSS-SHA256", rsa_key, b"pss message", signature)


def test_rsa_pss_verification_insists_on_the_salt_length(tpm: TPM2Provider) -> None:
    private = rsa.generate_private_key(65537, 2048)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = tpm.import_key("RSA-2048", spki, KeyFormat.SPKI_DER, P.VERIFY)
    for salt, valid in [(32, True), (0, False), (20, False), (padding.PSS.MAX_LENGTH, False)]:
        signature = private.sign(b"m", padding.PSS(padding.MGF1(hashes.SHA256()), salt), hashes.SHA256())
        assert _verify(tpm, "RSA-PSS-SHA256", key, b"m", signature) is valid, salt
    assert not _verify(tpm, "RSA-PSS-SHA256", key, b"m", b"\x01" * 255)  # wrong length
    pkcs1 = private.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    assert not _verify(tpm, "RSA-PSS-SHA256", key, b"m", pkcs1)


# --- AES ---------------------------------------------------------------------------------


def _cipher(
    tpm: TPM2Provider, algorithm: str, key: object, direction: CipherDirection, iv: bytes, chunks: list[bytes]
) -> bytes:
    op = tpm.create_cipher(algorithm, key, direction, iv, 16)  # type: ignore[arg-type]
    out = b"".join(op.update(c) for c in chunks)
    return out + op.finalize()


def _reference(algorithm: str, secret: bytes, iv: bytes) -> Cipher:  # type: ignore[type-arg]
    mode = {"CFB": CFB(iv), "CTR": modes.CTR(iv), "CBC": modes.CBC(iv)}[algorithm[-3:]]
    return Cipher(algorithms.AES(secret), mode)


@pytest.mark.parametrize(
    "algorithm", ["AES-128-CFB", "AES-256-CFB", "AES-128-CTR", "AES-256-CTR", "AES-128-CBC", "AES-256-CBC"]
)
@pytest.mark.parametrize("size", [0, 1, 16, 50, 1024, 3001])
def test_aes_equals_pyca_streamed(tpm: TPM2Provider, algorithm: str, size: int) -> None:
    secret = os.urandom(int(algorithm[4:7]) // 8)
    key = tpm.import_key(algorithm[:7], secret, KeyFormat.RAW, P.ENCRYPT | P.DECRYPT)
    iv, plain = os.urandom(16), os.urandom(size)
    reference = _reference(algorithm, secret, iv).encryptor()
    if algorithm.endswith("CBC"):
        from cryptography.hazmat.primitives import padding as sym_padding

        padder = sym_padding.PKCS7(128).padder()
        expected = reference.update(padder.update(plain) + padder.finalize())
    else:
        expected = reference.update(plain)
    chunks = _split(plain, random.Random(size))
    assert _cipher(tpm, algorithm, key, CipherDirection.ENCRYPT, iv, chunks) == expected
    back = _cipher(
        tpm, algorithm, key, CipherDirection.DECRYPT, iv, _split(expected, random.Random(size + 1))
    )
    assert back == plain


def test_generated_aes_key_round_trips(tpm: TPM2Provider) -> None:
    key = tpm.generate_key("AES-256", P.ENCRYPT | P.DECRYPT)
    iv = os.urandom(16)
    ct = _cipher(tpm, "AES-256-CBC", key, CipherDirection.ENCRYPT, iv, [b"secret data"])
    assert len(ct) == 16
    assert _cipher(tpm, "AES-256-CBC", key, CipherDirection.DECRYPT, iv, [ct]) == b"secret data"


def test_cbc_rejects_bad_padding_and_partial_blocks(tpm: TPM2Provider) -> None:
    secret = os.urandom(16)
    key = tpm.import_key("AES-128", secret, KeyFormat.RAW, P.ENCRYPT | P.DECRYPT)
    iv = os.urandom(16)
    raw = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    bad = raw.update(b"x" * 16) + raw.finalize()  # last byte 'x' is not valid padding
    for ciphertext, what in [(bad, "padding"), (bad[:15], "whole number")]:
        with pytest.raises(CryptoError) as err:
            _cipher(tpm, "AES-128-CBC", key, CipherDirection.DECRYPT, iv, [ciphertext])
        assert err.value.code is ErrorCode.INVALID_ARGUMENT and what in err.value.message


def test_key_permissions_are_tpm_object_attributes(tpm: TPM2Provider) -> None:
    # An encrypt-only AES key lacks the TPM "decrypt" attribute: even when the daemon's own
    # permission check is bypassed (as here, calling the provider directly), the TPM refuses.
    key = tpm.generate_key("AES-128", P.ENCRYPT)
    iv = os.urandom(16)
    ct = _cipher(tpm, "AES-128-CFB", key, CipherDirection.ENCRYPT, iv, [b"abc" * 10])
    with pytest.raises(CryptoError) as err:
        _cipher(tpm, "AES-128-CFB", key, CipherDirection.DECRYPT, iv, [ct])
    assert err.value.code is ErrorCode.KEY_OPERATION_NOT_PERMITTED
    with pytest.raises(CryptoError) as err:
        tpm.generate_key("ECDSA-P256", P.DERIVE)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_wrong_iv_and_key_sizes_are_invalid_arguments(tpm: TPM2Provider) -> None:
    key = tpm.generate_key("AES-128", P.ENCRYPT | P.DECRYPT)
    for call in (
        lambda: tpm.create_cipher("AES-128-CBC", key, CipherDirection.ENCRYPT, b"short", 16),
        lambda: tpm.create_cipher("AES-256-CBC", key, CipherDirection.ENCRYPT, bytes(16), 16),
        lambda: tpm.import_key("AES-256", b"k" * 16, KeyFormat.RAW, P.ENCRYPT),
        lambda: tpm.import_key("AES-128", b"k" * 16, KeyFormat.PKCS8_DER, P.ENCRYPT),
    ):
        with pytest.raises(CryptoError) as err:
            call()
        assert err.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(CryptoError) as err:
        tpm.generate_key("AES-192", P.ENCRYPT)
    assert err.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
