"""Key versions on the openssl provider through a real daemon (issue 11, build 1): old
ciphertext decrypts after a rotation, a retired version is named, another client's context
and loaded key survive a re-persist, a retirement and a clear; seal/open across a rotation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.key_versions import (
    check_holders_survive,
    check_rotation,
    cipher_user,
)

P = cs.KeyOperationPermission
SOFT = 2
CONFIG = {
    "providers": [{"name": "openssl", "id": SOFT, "options": {}}],
    "key_slots": [
        {
            "name": "Aes",
            "algorithm": "AES-256",
            "provider": SOFT,
            "permissions": ["encrypt", "decrypt"],
            "provision": "generate",
        },
        {
            "name": "Ec",
            "algorithm": "ECDSA-P256",
            "provider": SOFT,
            "permissions": ["sign", "verify"],
            "provision": "generate",
        },
    ],
}


def _new(algorithm: str, perms: cs.KeyOperationPermission) -> Callable[[Any], Any]:
    return lambda km: km.generate_key(
        cs.GenerateKeyParams().set_algorithm(algorithm).set_permissions(perms).set_provider(SOFT)
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    with DaemonProcess(tmp_path / "d", CONFIG) as process:
        yield process


def test_old_ciphertext_decrypts_after_rotation(daemon: DaemonProcess) -> None:
    with daemon.stack() as stack:
        check_rotation(stack, "Aes", "AES-256-GCM", _new("AES-256", P.ENCRYPT | P.DECRYPT))


def test_holders_survive_repersist_and_clear(daemon: DaemonProcess) -> None:
    check_holders_survive(
        daemon.stack, "Aes", _new("AES-256", P.ENCRYPT | P.DECRYPT), cipher_user("AES-256-GCM")
    )


def test_signatures_of_old_versions_still_verify(daemon: DaemonProcess) -> None:
    """A verify-only use of an older version: signed under v1, checked after the rotation
    with v1 loaded by number (and by pyca with v1's public key)."""
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot = ctx.resolve_resource("Ec", cs.ResourceType.KEY_SLOT)
        public = km.export_public_key(slot)
        signature = ctx.create_sign_context(
            cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(slot)
        ).sign(b"signed under v1")
        km.persist_key(slot, _new("ECDSA-P256", P.SIGN | P.VERIFY)(km))
        with km.load_key(slot, version=1) as v1:
            assert v1.permitted_operations == P.VERIFY
            verifier = ctx.create_verify_context(
                cs.VerifyContextConfig().set_algorithm("ECDSA-P256").set_key(v1)
            )
            verifier.init()
            verifier.update(b"signed under v1")
            assert verifier.verify_finalize(signature)
            with pytest.raises(cs.CryptoError) as err:
                ctx.create_sign_context(
                    cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(v1)
                )
            assert err.value.code is cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
        key = serialization.load_der_public_key(public)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, b"signed under v1", ec.ECDSA(hashes.SHA256()))
        assert km.export_public_key(slot) != public


def test_seal_open_across_rotation_and_restart(daemon: DaemonProcess) -> None:
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot = ctx.resolve_resource("Aes", cs.ResourceType.KEY_SLOT)
        sealer = ctx.create_seal_context(cs.SealContextConfig().set_key(slot))
        old = sealer.seal(b"sealed under v1", b"aad")
        km.persist_key(slot, _new("AES-256", P.ENCRYPT | P.DECRYPT)(km))
        new = sealer.seal(b"sealed under v2", b"aad")
    daemon.stop()
    daemon.start()
    with daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("Aes", cs.ResourceType.KEY_SLOT)
        sealer = ctx.create_seal_context(cs.SealContextConfig().set_key(slot))
        assert sealer.open(old, b"aad") == b"sealed under v1"
        assert sealer.open(new, b"aad") == b"sealed under v2"
        ctx.create_key_management_context().retire_key_version(slot, 1)
        with pytest.raises(cs.CryptoError) as err:
            sealer.open(old, b"aad")
        assert err.value.code is cs.ErrorCode.KEY_VERSION_RETIRED
