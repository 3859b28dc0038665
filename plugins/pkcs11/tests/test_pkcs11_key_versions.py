"""Key versions on a PKCS#11 token (SoftHSM2) through a real daemon (issue 11, build 1).

On main a re-persist or a clear destroyed the token object under keys other clients had
loaded: their open context failed with ``CKR_OBJECT_HANDLE_INVALID``. Now each version is
its own token object; a retired or cleared version's object is destroyed only when no
loaded key or open context uses it any more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess
from cryptostack_core.testing.key_versions import (
    check_holders_survive,
    check_rotation,
    cipher_user,
)
from cryptostack_core.testing.waiting import eventually

P = cs.KeyOperationPermission
HSM = 5
Objects = Callable[[Any], list[dict[str, Any]]]


def _config(token: Any) -> dict[str, Any]:
    return {
        "providers": [{"name": "pkcs11", "id": HSM, "options": token.options()}],
        "key_slots": [
            {
                "name": "HsmAes",
                "algorithm": "AES-256",
                "provider": HSM,
                "compatible_providers": [HSM],
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            }
        ],
    }


def _new(km: cs.KeyManagementContext) -> cs.CryptoResourceGuard:
    return km.generate_key(
        cs.GenerateKeyParams()
        .set_algorithm("AES-256")
        .set_permissions(P.ENCRYPT | P.DECRYPT)
        .set_provider(HSM)
    )


def _ids(token: Any, objects: Objects) -> list[str]:
    return sorted(o["id"] for o in objects(token) if o["label"] == "cryptostack:HsmAes")


def test_old_ciphertext_decrypts_after_rotation(
    tmp_path: Path, softhsm_token: Any, list_token_objects: Objects
) -> None:
    with DaemonProcess(tmp_path / "d", _config(softhsm_token)) as daemon:
        assert len(_ids(softhsm_token, list_token_objects)) == 1
        with daemon.stack() as stack:
            check_rotation(stack, "HsmAes", "AES-256-GCM", _new)
        # version 1 was retired (nobody held it): its object is gone, version 2's stays
        assert len(_ids(softhsm_token, list_token_objects)) == 1


def test_token_objects_outlive_their_version_while_used(
    tmp_path: Path, softhsm_token: Any, list_token_objects: Objects
) -> None:
    with DaemonProcess(tmp_path / "d", _config(softhsm_token)) as daemon:
        first = _ids(softhsm_token, list_token_objects)

        def only_the_held_version_is_left() -> None:
            # version 2 was never used: destroyed by the clear; version 1 is still held
            assert _ids(softhsm_token, list_token_objects) == first

        check_holders_survive(
            daemon.stack,
            "HsmAes",
            _new,
            cipher_user("AES-256-GCM"),
            after_clear=only_the_held_version_is_left,
        )
        eventually(
            lambda: _ids(softhsm_token, list_token_objects) == [],
            10,
            "the released version's token object destroyed",
        )
        log = daemon.log_text()
        assert "CKR_OBJECT_HANDLE_INVALID" not in log


def test_a_retired_version_is_named_not_a_failed_tag(tmp_path: Path, softhsm_token: Any) -> None:
    with DaemonProcess(tmp_path / "d", _config(softhsm_token)) as daemon, daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot = ctx.resolve_resource("HsmAes", cs.ResourceType.KEY_SLOT)
        sealer = ctx.create_seal_context(cs.SealContextConfig().set_key(slot))
        old = sealer.seal(b"sealed in the token")
        km.persist_key(slot, _new(km))
        assert sealer.open(old) == b"sealed in the token"
        km.retire_key_version(slot, 1)
        with pytest.raises(cs.CryptoError) as err:
            sealer.open(old)
        assert err.value.code is cs.ErrorCode.KEY_VERSION_RETIRED
        assert "version 1" in err.value.message
