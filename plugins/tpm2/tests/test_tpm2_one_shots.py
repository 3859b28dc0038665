"""One-shot calls on a TPM (swtpm) behind a real daemon: one request each (issue 14)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptostack_tpm2.testing import Swtpm

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
TPM = 5


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Swtpm]:
    simulator = Swtpm(tmp_path / "swtpm").start()
    yield simulator
    simulator.stop()


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


def test_one_shots_on_the_tpm(sim: Swtpm, tmp_path: Path) -> None:
    config = {
        "providers": [{"name": "tpm2", "id": TPM, "options": {"tcti": sim.tcti, "reset_lockout": True}}]
    }
    with (
        DaemonProcess(tmp_path / "d", config) as daemon,
        daemon.stack() as stack,
        stack.create_crypto_context() as ctx,
    ):
        count = counted(stack)
        h = ctx.create_hash_context(cs.HashContextConfig().set_algorithm("SHA-256").set_provider(TPM))
        assert h.provider == TPM
        for data in (b"", b"abc", os.urandom(3000)):
            assert count(h.single_shot, data) == (hashlib.sha256(data).digest(), ["hash.single_shot"])
        km = ctx.create_key_management_context()
        pair = km.generate_key(
            cs.GenerateKeyParams()
            .set_algorithm("ECDSA-P256")
            .set_permissions(P.SIGN | P.VERIFY)
            .set_provider(TPM)
        )
        signer = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(pair))
        assert signer.provider == TPM
        public = ser.load_der_public_key(km.export_public_key(pair))
        assert isinstance(public, ec.EllipticCurvePublicKey)
        verifier = ctx.create_verify_context(
            cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(pair)
        )
        for size in (0, 64, 5000):
            message = os.urandom(size)
            signature, sent = count(signer.sign, message)
            assert sent == ["sign.single_shot"]
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            assert count(verifier.verify, message, signature) == (True, ["verify.single_shot"])
            assert not verifier.verify(message + b"!", signature)
