"""The key store's KEK from a PKCS#11 token (issue 16, build 3): derived in the token under
a non-extractable key, nothing on the host's disk; the same KEK for every daemon that
reaches the token (two daemons sharing a PostgreSQL store). Remoting the token through
``p11-kit server`` is refused with a clear reason (docs/scaling.md says why and what works)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptostack_pkcs11.testing import P11KitServer, create_token

import cryptostack_core as cs
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
HSM, SOFT = 5, 2
Objects = Callable[[Any], list[dict[str, Any]]]


def _config(options: dict[str, Any], **daemon: Any) -> dict[str, Any]:
    return {
        "daemon": {"kek_provider": HSM, **daemon},
        "providers": [{"name": "openssl", "id": SOFT}, {"name": "pkcs11", "id": HSM, "options": options}],
        "key_slots": [
            {
                "name": "Soft",
                "algorithm": "AES-256",
                "provider": SOFT,
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            },
            {
                "name": "Hsm",
                "algorithm": "AES-256",
                "provider": HSM,
                "compatible_providers": [HSM],
                "permissions": ["encrypt", "decrypt"],
                "provision": "generate",
            },
        ],
    }


def _sealer(stack: cs.CryptoStack, slot: str) -> cs.SealContext:
    ctx = stack.create_crypto_context()
    return ctx.create_seal_context(
        cs.SealContextConfig().set_key(ctx.resolve_resource(slot, cs.ResourceType.KEY_SLOT))
    )


def test_kek_from_the_token_leaves_nothing_on_disk(
    tmp_path: Path, softhsm_token: Any, list_token_objects: Objects
) -> None:
    daemon = DaemonProcess(tmp_path / "d", _config(softhsm_token.options()))
    with daemon, daemon.stack() as stack:
        box = _sealer(stack, "Soft").seal(b"wrapped under a KEK from the token")
    assert not [p for p in tmp_path.rglob("*.kek")], "a KEK file was written"
    kek = [o for o in list_token_objects(softhsm_token) if o["label"] == "cryptostack-kek"]
    assert len(kek) == 1 and kek[0]["sensitive"] == 1 and kek[0]["extractable"] == 0
    with daemon, daemon.stack() as stack:  # the same KEK again after a restart
        assert _sealer(stack, "Soft").open(box) == b"wrapped under a KEK from the token"
    # Another token has no such key: the store is refused, never re-keyed.
    other = create_token(tmp_path / "other")
    moved = DaemonProcess(tmp_path / "d", _config(other.options()), env=other.environment())
    try:
        with pytest.raises(RuntimeError) as err:
            moved.start()
    finally:
        moved.stop()
    assert "cryptostack-kek" in str(err.value) and "missing" in str(err.value)
    assert "Traceback" not in str(err.value)


@pytest.mark.needs_postgresql
def test_two_daemons_share_a_store_and_a_token(tmp_path: Path, softhsm_token: Any, pg_cluster: Any) -> None:
    """Two daemons, one PostgreSQL store, one token: one KEK (derived in the token),
    token objects persisted on one daemon used on the other."""
    url = pg_cluster.database()
    config = _config(softhsm_token.options(), keystore=url)
    a = DaemonProcess(tmp_path / "a", config).start()
    b = DaemonProcess(tmp_path / "b", config).start()
    try:
        with a.stack() as sa, b.stack() as sb:
            for slot in ("Soft", "Hsm"):
                box = _sealer(sa, slot).seal(b"from a")
                assert _sealer(sb, slot).open(box) == b"from a"
            ctx = sa.create_crypto_context()
            km = ctx.create_key_management_context()
            hsm = ctx.resolve_resource("Hsm", cs.ResourceType.KEY_SLOT)
            new = km.generate_key(
                cs.GenerateKeyParams()
                .set_algorithm("AES-256")
                .set_permissions(P.ENCRYPT | P.DECRYPT)
                .set_provider(HSM)
            )
            assert km.persist_key(hsm, new).version == 2
            box = _sealer(sa, "Hsm").seal(b"version 2, in the shared token")
            assert box[2:6] == (2).to_bytes(4, "big")
            assert _sealer(sb, "Hsm").open(box) == b"version 2, in the shared token"
            assert sb.status()["keystore"]["engine"] == "postgresql"
    finally:
        a.stop()
        b.stop()
    assert not [p for p in tmp_path.rglob("*.kek")], "a KEK file was written"


def test_p11kit_remoting_is_refused_clearly(tmp_path: Path, softhsm_token: Any) -> None:
    """The token behind ``p11-kit server`` is reachable through p11-kit's client module,
    but that module hands every C_GetFunctionList call its own instance (and connection),
    while the provider's worker binds the module twice: the start fails naming the reason
    and the way out, instead of "CKR_CRYPTOKI_NOT_INITIALIZED ... should never see this"."""
    server = P11KitServer(softhsm_token, tmp_path).start()
    try:
        daemon = DaemonProcess(tmp_path / "d", _config(server.options()), env=server.environment())
        try:
            with pytest.raises(RuntimeError) as err:
                daemon.start()
        finally:
            daemon.stop()
        message = str(err.value)
        assert "exited with 2" in message and "separate instance" in message, message
        assert "p11-kit" in message and "Traceback" not in message
    finally:
        server.stop()
