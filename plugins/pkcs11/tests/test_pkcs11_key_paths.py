"""Every path a key can take between slots and providers (openssl and a SoftHSM token) keeps
the export rights its material started with (issue 10, finding 5): a copy — persisted,
moved to the other provider, derived — never lets a uid export what it could not export
from the original slot, and never gains EXPORT.

The tests run as root; the source slots' export allow-lists exclude root.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
SOFT, HSM = 2, 5
NOBODY = 4242  # the only uid allowed to export the source slots


def _config(token: Any) -> dict[str, Any]:
    both = [SOFT, HSM]

    def slot(name: str, provider: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "algorithm": "AES-256",
            "provider": provider,
            "compatible_providers": both,
            **extra,
        }

    return {
        "providers": [
            {"name": "openssl", "id": SOFT, "options": {}},
            {"name": "pkcs11", "id": HSM, "options": token.options()},
        ],
        "key_slots": [
            slot(
                "SoftSource",
                SOFT,
                provision="generate",
                write_uids=[NOBODY],
                permissions=["encrypt", "decrypt", "derive", "export"],
            ),
            slot(
                "HsmSource",
                HSM,
                provision="generate",
                write_uids=[NOBODY],
                permissions=["encrypt", "decrypt", "export"],
            ),
            slot("SoftCopy", SOFT, write_uids=[0]),
            slot("HsmCopy", HSM, write_uids=[0]),
        ],
    }


@pytest.fixture
def stack(tmp_path: Path, softhsm_token: Any) -> Any:
    with DaemonProcess(tmp_path / "d", _config(softhsm_token)) as daemon, daemon.stack() as stack:
        yield stack
        assert "Traceback" not in daemon.log_text()


def _refused(action: Callable[[], Any], code: cs.ErrorCode = cs.ErrorCode.ACCESS_DENIED) -> None:
    with pytest.raises(cs.CryptoError) as err:
        action()
    assert err.value.code is code, err.value


PATHS = {
    "openssl slot -> openssl slot": ("SoftSource", ["SoftCopy"]),
    "openssl slot -> token slot": ("SoftSource", ["HsmCopy"]),
    "token slot -> openssl slot": ("HsmSource", ["SoftCopy"]),
    "openssl -> token -> openssl": ("SoftSource", ["HsmCopy", "SoftCopy"]),
    "token -> openssl -> token": ("HsmSource", ["SoftCopy", "HsmCopy"]),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_a_persisted_copy_keeps_the_export_allow_list(stack: Any, path: str) -> None:
    source, hops = PATHS[path]
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slots = {
        n: ctx.resolve_resource(n, cs.ResourceType.KEY_SLOT)
        for n in ("SoftSource", "HsmSource", "SoftCopy", "HsmCopy")
    }
    _refused(lambda: km.export_key(slots[source]))  # the baseline
    key = km.load_key(slots[source])
    for hop in hops:
        km.persist_key(slots[hop], key)
        info = km.get_key_slot_info(slots[hop])
        assert info.provider == (HSM if hop.startswith("Hsm") else SOFT)
        assert info.permissions & P.EXPORT  # the permission travels, the allow-list too
        _refused(lambda hop=hop: km.export_key(slots[hop]))
        key = km.load_key(slots[hop])
        _refused(lambda key=key: km.export_key(key))
    # It is still the same key: what it encrypts, the source decrypts.
    enc = ctx.create_cipher_context(
        cs.CipherContextConfig()
        .set_algorithm("AES-256-CBC")
        .set_key(key)
        .set_direction(cs.CipherDirection.ENCRYPT)
    )
    enc.init(bytes(16))
    sealed = enc.update(b"sixteen byte msg") + enc.finalize()
    dec = ctx.create_cipher_context(
        cs.CipherContextConfig()
        .set_algorithm("AES-256-CBC")
        .set_key(slots[source])
        .set_direction(cs.CipherDirection.DECRYPT)
    )
    dec.init(bytes(16))
    assert dec.update(sealed) + dec.finalize() == b"sixteen byte msg"


def test_a_derived_key_keeps_the_export_allow_list(stack: Any) -> None:
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    source = ctx.resolve_resource("SoftSource", cs.ResourceType.KEY_SLOT)
    derived = km.derive_key(
        cs.DeriveKeyParams()
        .set_key(source)
        .set_info(b"tenant")
        .set_output("AES-256")
        .set_permissions(P.ENCRYPT | P.EXPORT)
    )
    _refused(lambda: km.export_key(derived))
    km.persist_key(ctx.resolve_resource("HsmCopy", cs.ResourceType.KEY_SLOT), derived)
    _refused(lambda: km.export_key(ctx.resolve_resource("HsmCopy", cs.ResourceType.KEY_SLOT)))


@pytest.mark.parametrize("home", [SOFT, HSM])
def test_a_copy_never_gains_export_and_own_keys_stay_exportable(stack: Any, home: int) -> None:
    ctx = stack.create_crypto_context()
    km = ctx.create_key_management_context()
    soft_copy = ctx.resolve_resource("SoftCopy", cs.ResourceType.KEY_SLOT)
    hsm_copy = ctx.resolve_resource("HsmCopy", cs.ResourceType.KEY_SLOT)
    sealed = km.generate_key(
        cs.GenerateKeyParams()
        .set_algorithm("AES-256")
        .set_provider(home)
        .set_permissions(P.ENCRYPT | P.DECRYPT | P.DERIVE)
    )
    for target in (soft_copy, hsm_copy):
        if home == HSM and target is soft_copy:  # not extractable: it never leaves the token
            _refused(
                lambda target=target: km.persist_key(target, sealed), cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED
            )
            continue
        km.persist_key(target, sealed)
        assert not km.get_key_slot_info(target).permissions & P.EXPORT
        _refused(lambda target=target: km.export_key(target), cs.ErrorCode.KEY_OPERATION_NOT_PERMITTED)
    # The client's own exportable key, persisted anywhere, is exported by it again.
    mine = km.generate_key(
        cs.GenerateKeyParams()
        .set_algorithm("AES-256")
        .set_provider(home)
        .set_permissions(P.ENCRYPT | P.EXPORT)
    )
    material = km.export_key(mine)
    for target in (soft_copy, hsm_copy):
        km.persist_key(target, mine)
        assert km.export_key(target) == material
