"""Key versions on a TPM (swtpm) through a real daemon (issue 11, build 1): old ciphertext
decrypts after a rotation, a retired version is named, another client's context and loaded
key keep working across a re-persist, a retirement and a clear (TPM keys are blobs the key
store holds: every version loads on its own)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptostack_tpm2.testing import Swtpm

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.key_versions import (
    check_holders_survive,
    check_rotation,
    cipher_user,
)

P = cs.KeyOperationPermission
TPM = 5


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    sim = Swtpm(tmp_path / "swtpm").start()
    config = {
        "providers": [{"name": "tpm2", "id": TPM, "options": {"tcti": sim.tcti, "reset_lockout": True}}],
        "key_slots": [
            {
                "name": "TpmAes",
                "algorithm": "AES-256",
                "provider": TPM,
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            },
            {
                "name": "TpmEc",
                "algorithm": "ECDSA-P256",
                "provider": TPM,
                "permissions": ["sign", "verify"],
                "provision": "generate",
            },
        ],
    }
    try:
        with DaemonProcess(tmp_path / "d", config) as process:
            yield process
    finally:
        sim.stop()


def _new(algorithm: str, perms: cs.KeyOperationPermission) -> Callable[[Any], Any]:
    return lambda km: km.generate_key(
        cs.GenerateKeyParams().set_algorithm(algorithm).set_permissions(perms).set_provider(TPM)
    )


def _signer(ctx: cs.CryptoContext, key: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    sign = ctx.create_sign_context(cs.SignContextConfig().set_algorithm("ECDSA-P256").set_key(key))

    def once() -> None:
        assert sign.sign(os.urandom(16))

    return once, sign.close


def test_old_ciphertext_decrypts_after_rotation(daemon: DaemonProcess) -> None:
    with daemon.stack() as stack:
        check_rotation(stack, "TpmAes", "AES-256-CBC", _new("AES-256", P.ENCRYPT | P.DECRYPT), iv_size=16)


def test_holders_survive_repersist_and_clear(daemon: DaemonProcess) -> None:
    check_holders_survive(daemon.stack, "TpmEc", _new("ECDSA-P256", P.SIGN | P.VERIFY), _signer)
    check_holders_survive(
        daemon.stack, "TpmAes", _new("AES-256", P.ENCRYPT | P.DECRYPT), cipher_user("AES-256-CBC", 16)
    )
