"""One-shot calls on keys in a SoftHSM2 token behind a real daemon: one request each, the
bytes pyca/cryptography computes (issue 14)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
D = cs.CipherDirection
HSM = 5


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


def test_one_shots_in_the_token(tmp_path: Path, softhsm_token: Any) -> None:
    config = {"providers": [{"name": "pkcs11", "id": HSM, "options": softhsm_token.options()}]}
    with (
        DaemonProcess(tmp_path / "d", config) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        count = counted(stack)
        km = ctx.create_key_management_context()
        aes = km.generate_key(
            cs.GenerateKeyParams()
            .set_algorithm("AES-256")
            .set_permissions(P.ENCRYPT | P.DECRYPT | P.EXPORT)
            .set_provider(HSM)
        )
        secret = km.export_key(aes)
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(D.ENCRYPT)
        )
        dec = ctx.create_cipher_context(
            cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(aes).set_direction(D.DECRYPT)
        )
        assert enc.provider == HSM and dec.provider == HSM
        for size in (1, 64, 5000):
            nonce, data, aad = os.urandom(12), os.urandom(size), b"header"
            sealed, sent = count(enc.encrypt, nonce, data, aad)
            assert sealed == AESGCM(secret).encrypt(nonce, data, aad)
            assert sent == ["cipher.single_shot"]
            assert count(dec.decrypt, nonce, sealed, aad) == (data, ["cipher.single_shot"])
        with pytest.raises(cs.CryptoError) as err:
            dec.decrypt(nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad)
        assert err.value.code is cs.ErrorCode.AUTHENTICATION_FAILED

        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256").set_provider(HSM))
        for data in (b"", b"abc", os.urandom(70_000)):
            assert count(h.single_shot, data) == (hashlib.sha256(data).digest(), ["hash.single_shot"])

        pair = km.generate_key(
            cs.GenerateKeyParams()
            .set_algorithm("ECDSA-P256")
            .set_permissions(P.SIGN | P.VERIFY)
            .set_provider(HSM)
        )
        signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(pair))
        verifier = ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(pair)
        )
        assert signer.provider == HSM
        message = os.urandom(300)
        signature, sent = count(signer.sign, message)
        assert sent == ["sign.single_shot"]
        public = ser.load_der_public_key(km.export_public_key(pair))
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        assert count(verifier.verify, message, signature) == (True, ["verify.single_shot"])
        assert not verifier.verify(message + b"!", signature)

        mac_key = km.generate_key(
            cs.GenerateKeyParams().set_algorithm("HMAC-SHA-256").set_permissions(P.MAC).set_provider(HSM)
        )
        mac = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_key))
        check = ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("HMAC-SHA-256").set_key(mac_key)
        )
        tag, sent = count(mac.mac, b"mac me")
        assert sent == ["sign.single_shot"] and len(tag) == 32
        assert check.verify(b"mac me", tag) and not check.verify(b"mac me!", tag)
