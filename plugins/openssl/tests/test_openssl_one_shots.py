"""One-shot calls on the OpenSSL provider behind a real daemon and in-process: one request
each, the same bytes as pyca/cryptography (issue 14)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
D = cs.CipherDirection
CONFIG = {"providers": [{"name": "openssl", "id": 2, "options": {}}]}


@pytest.fixture(params=["inproc", "unix"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[cs.CryptoStack]:
    if request.param == "inproc":
        config = {
            **CONFIG,
            "daemon": {
                "keystore": str(tmp_path / "ks.sqlite3"),
                "state_dir": str(tmp_path / "state"),
            },
        }
        with cs.create_crypto_stack(
            cs.CryptoStackConfig().set_connection_endpoint("inproc://").set_daemon_config(config)
        ) as s:
            yield s
        return
    with DaemonProcess(tmp_path / "d", CONFIG) as daemon, daemon.stack() as s:
        yield s


def counted(stack: cs.CryptoStack) -> Callable[..., tuple[Any, list[str]]]:
    """Wraps the stack's transport: each call returns (result, the requests it sent)."""
    sent: list[str] = []
    transport = stack._channel.transport
    inner = transport.call

    def call(op: str, args: Any, timeout: float | None) -> Any:
        sent.append(op)
        return inner(op, args, timeout)

    transport.call = call  # type: ignore[method-assign]

    def run(fn: Callable[..., Any], *args: Any) -> tuple[Any, list[str]]:
        start = len(sent)
        return fn(*args), sent[start:]

    return run


def key(ctx: cs.CryptoContext, algorithm: str, perms: P) -> cs.CryptoResourceGuard:
    return ctx.create_key_management_context().generate_key(
        cs.GenerateKeyParams().set_algorithm(algorithm).set_permissions(perms | P.EXPORT)
    )


@pytest.mark.parametrize(
    ("algorithm", "key_algorithm", "reference"),
    [
        ("AES-256-GCM", "AES-256", AESGCM),
        ("AES-128-GCM", "AES-128", AESGCM),
        ("ChaCha20-Poly1305", "ChaCha20-Poly1305", ChaCha20Poly1305),
    ],
)
def test_aead_one_shots(
    stack: cs.CryptoStack, algorithm: str, key_algorithm: str, reference: Any
) -> None:
    count = counted(stack)
    ctx = stack.create_crypto_context()
    guard = key(ctx, key_algorithm, P.ENCRYPT | P.DECRYPT)
    secret = ctx.create_key_management_context().export_key(guard)
    enc = ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(algorithm).set_key(guard).set_direction(D.ENCRYPT)
    )
    dec = ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm(algorithm).set_key(guard).set_direction(D.DECRYPT)
    )
    for size in (0, 1, 64, 4096, 300_000):  # the last one through shared memory (daemon)
        nonce, data, aad = os.urandom(12), os.urandom(size), os.urandom(size % 50)
        sealed, sent = count(enc.encrypt, nonce, data, aad)
        assert sealed == reference(secret).encrypt(nonce, data, aad) and len(sent) == 1
        opened, sent = count(dec.decrypt, nonce, sealed, aad)
        assert opened == data and len(sent) == 1
    with pytest.raises(cs.CryptoError) as err:
        dec.decrypt(nonce, sealed, aad + b"x")
    assert err.value.code is cs.ErrorCode.AUTHENTICATION_FAILED


def test_cbc_and_ctr_one_shots_match_the_streamed_calls(stack: cs.CryptoStack) -> None:
    ctx = stack.create_crypto_context()
    guard = key(ctx, "AES-256", P.ENCRYPT | P.DECRYPT)
    for algorithm in ("AES-256-CBC", "AES-256-CTR"):
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm(algorithm)
            .set_key(guard)
            .set_direction(D.ENCRYPT)
        )
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm(algorithm)
            .set_key(guard)
            .set_direction(D.DECRYPT)
        )
        iv, data = os.urandom(16), os.urandom(1000)
        sealed = enc.encrypt(iv, data)
        enc.init(iv)
        assert enc.update(data) + enc.finalize() == sealed
        assert dec.decrypt(iv, sealed) == data


@pytest.mark.parametrize(
    "algorithm",
    ["ECDSA-P256", "ECDSA-P384", "Ed25519", "ML-DSA-44", "HMAC-SHA-256", "HMAC-SHA-512"],
)
def test_sign_verify_mac_one_shots(stack: cs.CryptoStack, algorithm: str) -> None:
    count = counted(stack)
    ctx = stack.create_crypto_context()
    perms = P.SIGN | P.VERIFY | (P.MAC if algorithm.startswith("HMAC") else P.NONE)
    guard = key(ctx, algorithm, perms)
    km = ctx.create_key_management_context()
    signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm(algorithm).set_key(guard))
    verifier = ctx.create_verify_context(
        cs.VerifyContextConfig().set_algorithm(algorithm).set_key(guard)
    )
    message = os.urandom(777)
    signature, sent = count(signer.sign, message)
    assert sent == ["sign.single_shot"]
    assert count(verifier.verify, message, signature) == (True, ["verify.single_shot"])
    assert count(verifier.verify, message[:-1], signature) == (False, ["verify.single_shot"])
    if algorithm.startswith("HMAC"):
        digest = "sha256" if algorithm.endswith("256") else "sha512"
        assert signature == hmac.new(km.export_key(guard), message, digest).digest()
        assert count(signer.mac, message) == (signature, ["sign.single_shot"])
        return
    public = ser.load_der_public_key(km.export_public_key(guard))
    if isinstance(public, ec.EllipticCurvePublicKey):
        chosen = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA384()
        public.verify(signature, message, ec.ECDSA(chosen))
    elif isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, message)
    # streamed and one-shot signatures verify alike
    signer.init()
    signer.update(message[:100])
    signer.update(message[100:])
    assert verifier.verify(message, signer.sign_finalize())


def test_hash_one_shots(stack: cs.CryptoStack) -> None:
    count = counted(stack)
    h = stack.create_crypto_context().create_hash_context(
        cs.HashContextConfig().set_algorithm("SHA3-256")
    )
    for size in (0, 100, 1 << 20):
        data = os.urandom(size)
        assert count(h.single_shot, data) == (hashlib.sha3_256(data).digest(), ["hash.single_shot"])
