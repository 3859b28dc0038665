"""Ciphers of the OpenSSL provider against pyca/cryptography used directly, streaming, and the
IV/tag/padding policy of the provider docstring."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from cryptostack_core.sdk import REGISTRY, CipherOperation, CryptoError, ErrorCode, ProviderKey
from cryptostack_core.sdk import CipherDirection as D
from cryptostack_core.sdk import KeyFormat as F
from cryptostack_core.sdk import KeyOperationPermission as P
from cryptostack_openssl import OpenSSLProvider

ENC, DEC = D.ENCRYPT, D.DECRYPT
MESSAGE = os.urandom(1000)
AAD = os.urandom(37)
CHUNKS = [0, 1, 15, 16, 17, 31, 64, 100]  # update sizes cycled over the message


def chunked(data: bytes) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = CHUNKS[i % len(CHUNKS)]
        out.append(data[pos : pos + size])
        pos += size
        i += 1
    return out


def run(
    op: CipherOperation, data: bytes, aad: bytes | None = None, pieces: bool = False
) -> tuple[bytes, bytes]:
    """(output of every update joined, output of finalize)."""
    if aad:
        for piece in chunked(aad) if pieces else [aad]:
            op.update_aad(memoryview(piece))
    streamed = b"".join(op.update(memoryview(p)) for p in (chunked(data) if pieces else [data]))
    return streamed, op.finalize()


def key(provider: OpenSSLProvider, algorithm: str, raw: bytes) -> ProviderKey:
    return provider.import_key(algorithm, raw, F.RAW, P.ENCRYPT | P.DECRYPT)


@pytest.mark.parametrize("bits", [128, 192, 256])
@pytest.mark.parametrize("pieces", [False, True])
def test_aes_gcm_matches_pyca(provider: OpenSSLProvider, bits: int, pieces: bool) -> None:
    raw, iv = os.urandom(bits // 8), os.urandom(12)
    k = key(provider, f"AES-{bits}", raw)
    expected = AESGCM(raw).encrypt(iv, MESSAGE, AAD)
    op = provider.create_cipher(f"AES-{bits}-GCM", k, ENC, iv, 16)
    streamed, tail = run(op, MESSAGE, AAD, pieces)
    assert streamed == expected[:-16] and tail == expected[-16:]  # streams as it goes
    op = provider.create_cipher(f"AES-{bits}-GCM", k, DEC, iv, 16)
    streamed, tail = run(op, expected, AAD, pieces)
    assert streamed == b"" and tail == MESSAGE  # nothing before the tag verified


@pytest.mark.parametrize("pieces", [False, True])
def test_chacha20_poly1305_matches_pyca(provider: OpenSSLProvider, pieces: bool) -> None:
    raw, nonce = os.urandom(32), os.urandom(12)
    k = key(provider, "ChaCha20-Poly1305", raw)
    for message, aad in [
        (MESSAGE, AAD),
        (b"", b""),
        (b"x", b""),
        (b"", AAD),
        (os.urandom(64), os.urandom(16)),
    ]:
        expected = ChaCha20Poly1305(raw).encrypt(nonce, message, aad or None)
        streamed, tail = run(
            provider.create_cipher("ChaCha20-Poly1305", k, ENC, nonce, 16), message, aad, pieces
        )
        assert streamed + tail == expected and streamed == expected[:-16]
        streamed, tail = run(
            provider.create_cipher("ChaCha20-Poly1305", k, DEC, nonce, 16), expected, aad, pieces
        )
        assert (streamed, tail) == (b"", message)


@pytest.mark.parametrize("bits", [128, 192, 256])
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 1000])
def test_aes_cbc_pkcs7_matches_pyca(provider: OpenSSLProvider, bits: int, length: int) -> None:
    raw, iv, message = os.urandom(bits // 8), os.urandom(16), os.urandom(length)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(message) + padder.finalize()
    encryptor = Cipher(algorithms.AES(raw), modes.CBC(iv)).encryptor()
    expected = encryptor.update(padded) + encryptor.finalize()
    k = key(provider, f"AES-{bits}", raw)
    for pieces in (False, True):
        out = run(provider.create_cipher(f"AES-{bits}-CBC", k, ENC, iv, 16), message, pieces=pieces)
        assert b"".join(out) == expected
        streamed, tail = run(
            provider.create_cipher(f"AES-{bits}-CBC", k, DEC, iv, 16), expected, pieces=pieces
        )
        assert streamed + tail == message
        assert len(tail) <= 16  # the last block is the only one held back


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_aes_ctr_matches_pyca(provider: OpenSSLProvider, bits: int) -> None:
    raw = os.urandom(bits // 8)
    iv = b"\xff" * 15 + b"\xfe"  # the 128-bit counter carries across all bytes
    encryptor = Cipher(algorithms.AES(raw), modes.CTR(iv)).encryptor()
    expected = encryptor.update(MESSAGE) + encryptor.finalize()
    k = key(provider, f"AES-{bits}", raw)
    for direction, data, result in [(ENC, MESSAGE, expected), (DEC, expected, MESSAGE)]:
        streamed, tail = run(
            provider.create_cipher(f"AES-{bits}-CTR", k, direction, iv, 16), data, pieces=True
        )
        assert streamed == result and tail == b""


def test_aead_tampering_is_authentication_failed(provider: OpenSSLProvider) -> None:
    for algorithm, key_alg, size in [
        ("AES-256-GCM", "AES-256", 32),
        ("ChaCha20-Poly1305", "ChaCha20-Poly1305", 32),
    ]:
        k = key(provider, key_alg, os.urandom(size))
        iv = os.urandom(12)
        streamed, tail = run(provider.create_cipher(algorithm, k, ENC, iv, 16), MESSAGE, AAD)
        sealed = streamed + tail
        flipped = bytearray(sealed)
        flipped[5] ^= 1
        for data, aad in [
            (bytes(flipped), AAD),
            (sealed, AAD[:-1]),
            (sealed[:-1], AAD),
            (sealed, b""),
        ]:
            op = provider.create_cipher(algorithm, k, DEC, iv, 16)
            with pytest.raises(CryptoError) as exc:
                run(op, data, aad)
            assert exc.value.code is ErrorCode.AUTHENTICATION_FAILED
        op = provider.create_cipher(algorithm, k, DEC, iv, 16)
        assert op.update(sealed[:15]) == b""
        with pytest.raises(CryptoError) as exc:
            op.finalize()
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT  # shorter than the tag


def test_gcm_truncated_tags(provider: OpenSSLProvider) -> None:
    raw, iv = os.urandom(16), os.urandom(12)
    k = key(provider, "AES-128", raw)
    full = AESGCM(raw).encrypt(iv, MESSAGE, AAD)
    for tag_length in sorted(REGISTRY.get("AES-128-GCM").tag_sizes):
        streamed, tail = run(
            provider.create_cipher("AES-128-GCM", k, ENC, iv, tag_length), MESSAGE, AAD
        )
        assert streamed + tail == full[: len(MESSAGE) + tag_length]
        decrypted = run(
            provider.create_cipher("AES-128-GCM", k, DEC, iv, tag_length), streamed + tail, AAD
        )
        assert decrypted == (b"", MESSAGE)
        bad = bytearray(streamed + tail)
        bad[-1] ^= 0x80
        with pytest.raises(CryptoError) as exc:
            run(provider.create_cipher("AES-128-GCM", k, DEC, iv, tag_length), bytes(bad), AAD)
        assert exc.value.code is ErrorCode.AUTHENTICATION_FAILED
    for tag_length in (0, 3, 5, 7, 9, 11, 17):
        with pytest.raises(CryptoError) as exc:
            provider.create_cipher("AES-128-GCM", k, ENC, iv, tag_length)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_gcm_iv_length_policy(provider: OpenSSLProvider) -> None:
    """Policy: AES-GCM IVs of 8..128 bytes; shorter or longer ones are INVALID_ARGUMENT."""
    raw = os.urandom(32)
    k = key(provider, "AES-256", raw)
    assert REGISTRY.get("AES-256-GCM").iv_sizes == (8, 128)
    for length in (8, 12, 16, 60, 128):
        iv = os.urandom(length)
        out = b"".join(run(provider.create_cipher("AES-256-GCM", k, ENC, iv, 16), MESSAGE, AAD))
        assert out == AESGCM(raw).encrypt(iv, MESSAGE, AAD)
    for length in (0, 1, 4, 7, 129, 257):
        for direction in (ENC, DEC):
            with pytest.raises(CryptoError) as exc:
                provider.create_cipher("AES-256-GCM", k, direction, bytes(length), 16)
            assert exc.value.code is ErrorCode.INVALID_ARGUMENT
            assert "IV" in exc.value.message


def test_chacha_nonce_and_tag_policy(provider: OpenSSLProvider) -> None:
    k = key(provider, "ChaCha20-Poly1305", os.urandom(32))
    for nonce_length in (0, 8, 11, 13, 16, 24):
        with pytest.raises(CryptoError) as exc:
            provider.create_cipher("ChaCha20-Poly1305", k, ENC, bytes(nonce_length), 16)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    for tag_length in (4, 12, 15):
        with pytest.raises(CryptoError) as exc:
            provider.create_cipher("ChaCha20-Poly1305", k, DEC, bytes(12), tag_length)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_block_mode_iv_length(provider: OpenSSLProvider) -> None:
    k = key(provider, "AES-128", os.urandom(16))
    for algorithm in ("AES-128-CBC", "AES-128-CTR"):
        for length in (0, 12, 15, 17, 32):
            with pytest.raises(CryptoError) as exc:
                provider.create_cipher(algorithm, k, ENC, bytes(length), 16)
            assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_cbc_bad_padding_and_partial_block(provider: OpenSSLProvider) -> None:
    raw, iv = os.urandom(16), os.urandom(16)
    k = key(provider, "AES-128", raw)
    encryptor = Cipher(algorithms.AES(raw), modes.CBC(iv)).encryptor()
    unpadded = encryptor.update(b"A" * 32) + encryptor.finalize()  # last byte 0x41: bad pad
    for data in (unpadded, unpadded[:20], b""):
        op = provider.create_cipher("AES-128-CBC", k, DEC, iv, 16)
        released = op.update(data)
        assert len(released) <= max(0, len(data) - 16)
        with pytest.raises(CryptoError) as exc:
            op.finalize()
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_aad_rules(provider: OpenSSLProvider) -> None:
    k = key(provider, "AES-128", os.urandom(16))
    for algorithm, iv in [("AES-128-GCM", bytes(12)), ("AES-128-CBC", bytes(16))]:
        for direction in (ENC, DEC):
            op = provider.create_cipher(algorithm, k, direction, iv, 16)
            op.update(b"x" * 16)
            with pytest.raises(CryptoError) as exc:
                op.update_aad(b"late")
            assert exc.value.code is ErrorCode.INVALID_STATE
    c = key(provider, "ChaCha20-Poly1305", os.urandom(32))
    for direction in (ENC, DEC):
        op = provider.create_cipher("ChaCha20-Poly1305", c, direction, bytes(12), 16)
        op.update(b"x" * 20)
        with pytest.raises(CryptoError) as exc:
            op.update_aad(b"late")
        assert exc.value.code is ErrorCode.INVALID_STATE


def test_wrong_key_for_cipher(provider: OpenSSLProvider) -> None:
    aes128 = key(provider, "AES-128", os.urandom(16))
    hmac_key = provider.generate_key("HMAC-SHA-256", P.SIGN)
    secret = provider.generate_key("GENERIC-SECRET", P.DERIVE)
    pair = provider.generate_key("Ed25519", P.SIGN)
    for algorithm, k, iv in [
        ("AES-256-GCM", aes128, 12),
        ("AES-128-GCM", hmac_key, 12),
        ("AES-256-CBC", secret, 16),
        ("ChaCha20-Poly1305", aes128, 12),
        ("AES-128-CTR", pair, 16),
    ]:
        with pytest.raises(CryptoError) as exc:
            provider.create_cipher(algorithm, k, ENC, bytes(iv), 16)
        assert exc.value.code is ErrorCode.INVALID_ARGUMENT
        assert "key" in exc.value.message
    with pytest.raises(CryptoError) as exc:
        provider.create_cipher("AES-128-OFB", aes128, ENC, bytes(16), 16)
    assert exc.value.code is ErrorCode.UNSUPPORTED_ALGORITHM
