"""Key versions (issue 11, build 1): persisting adds a version and makes it primary; older
versions decrypt and verify until retired (audited); versions are listed, loadable by number,
disabled below a minimum; clearing removes them all; a loaded key keeps working until
released. On today's main a re-persist destroyed the old key: old ciphertext failed with a
misleading AUTHENTICATION_FAILED."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cryptostack_core as cs
from cryptostack_core.server.keystore import KeyStore
from cryptostack_core.server.keystore.sealing import StoreKeys, encode
from cryptostack_core.server.paths import default_kek_file
from cryptostack_core.testing.daemon import DaemonProcess

P = cs.KeyOperationPermission
E = cs.ErrorCode
ENC, DEC = cs.CipherDirection.ENCRYPT, cs.CipherDirection.DECRYPT
MockConfig = Callable[..., dict[str, Any]]


def _gcm(ctx: cs.CryptoContext, key: Any, direction: cs.CipherDirection, iv: bytes, data: bytes) -> bytes:
    with ctx.create_cipher_context(
        cs.CipherContextConfig().set_algorithm("AES-256-GCM").set_key(key).set_direction(direction)
    ) as c:
        c.init(iv)
        out = c.update(data)
        return out + c.finalize()


def _new_key(km: cs.KeyManagementContext) -> cs.CryptoResourceGuard:
    return km.generate_key(
        cs.GenerateKeyParams().set_algorithm("AES-256").set_permissions(P.ENCRYPT | P.DECRYPT)
    )


def test_rotation_keeps_old_versions_for_decryption(any_stack: cs.CryptoStack) -> None:
    """Issue 11, finding 1: after a re-persist, data under the old key still decrypts."""
    ctx = any_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    first = km.persist_key(slot, _new_key(km))
    assert first.version == 1 and first.primary_version == 1
    iv = os.urandom(12)
    old_ct = _gcm(ctx, slot, ENC, iv, b"under version 1")
    second = km.persist_key(slot, _new_key(km))
    assert second.version == 2
    assert [(v.version, v.state) for v in second.versions] == [
        (1, cs.KeyVersionState.ACTIVE),
        (2, cs.KeyVersionState.PRIMARY),
    ]
    # The slot now encrypts with version 2, which cannot open version 1's message...
    with pytest.raises(cs.CryptoError) as err:
        _gcm(ctx, slot, DEC, iv, old_ct)
    assert err.value.code is E.AUTHENTICATION_FAILED
    # ...but version 1 is still there, by number, for decryption only.
    with km.load_key(slot, version=1) as v1:
        assert v1.version == 1
        assert _gcm(ctx, v1, DEC, iv, old_ct) == b"under version 1"
        assert v1.permitted_operations == P.DECRYPT
        with pytest.raises(cs.CryptoError) as err:
            _gcm(ctx, v1, ENC, iv, b"new data under an old version")
        assert err.value.code is E.KEY_OPERATION_NOT_PERMITTED
    with km.load_key(slot) as primary:
        assert primary.version == 2 and primary.permitted_operations == P.ENCRYPT | P.DECRYPT
    with pytest.raises(cs.CryptoError) as err:
        km.load_key(slot, version=7)
    assert err.value.code is E.RESOURCE_NOT_FOUND and "no version 7" in err.value.message


def test_retired_versions_fail_clearly(any_stack: cs.CryptoStack) -> None:
    """Decrypting with a retired version names the version (not AUTHENTICATION_FAILED); a
    key loaded before the retirement keeps working until released."""
    ctx = any_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    km.persist_key(slot, _new_key(km))
    iv = os.urandom(12)
    old_ct = _gcm(ctx, slot, ENC, iv, b"v1 data")
    km.persist_key(slot, _new_key(km))
    held = km.load_key(slot, version=1)
    with pytest.raises(cs.CryptoError) as err:
        km.retire_key_version(slot, 2)  # the primary
    assert err.value.code is E.INVALID_STATE and "primary" in err.value.message
    info = km.retire_key_version(slot, 1)
    assert [(v.version, v.state) for v in info.versions] == [
        (1, cs.KeyVersionState.RETIRED),
        (2, cs.KeyVersionState.PRIMARY),
    ]
    with pytest.raises(cs.CryptoError) as err:
        km.load_key(slot, version=1)
    assert err.value.code is E.KEY_VERSION_RETIRED
    assert "version 1" in err.value.message and "retired" in err.value.message
    # The guard loaded before keeps working (one rule on every provider).
    assert _gcm(ctx, held, DEC, iv, old_ct) == b"v1 data"
    held.release()
    km.retire_key_version(slot, 1)  # again: nothing to do, no error
    with pytest.raises(cs.CryptoError) as err:
        km.retire_key_version(slot, 9)
    assert err.value.code is E.RESOURCE_NOT_FOUND


def test_minimum_version_disables_without_destroying(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    for _ in range(3):
        km.persist_key(slot, _new_key(km))
    info = km.set_minimum_version(slot, 3)
    assert info.min_version == 3
    assert [v.state for v in info.versions] == [cs.KeyVersionState.DISABLED] * 2 + [
        cs.KeyVersionState.PRIMARY
    ]
    with pytest.raises(cs.CryptoError) as err:
        km.load_key(slot, version=2)
    assert err.value.code is E.KEY_VERSION_RETIRED and "minimum version 3" in err.value.message
    with pytest.raises(cs.CryptoError) as err:
        km.set_minimum_version(slot, 4)  # beyond the primary
    assert err.value.code is E.INVALID_ARGUMENT
    km.set_minimum_version(slot, 0)  # lowered again: version 2 is back
    km.load_key(slot, version=2).release()


def test_clearing_removes_every_version_and_numbers_go_on(any_stack: cs.CryptoStack) -> None:
    ctx = any_stack.create_crypto_context()
    km = ctx.create_key_management_context()
    slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
    km.persist_key(slot, _new_key(km))
    km.persist_key(slot, _new_key(km))
    km.clear_key_slot(slot)
    info = km.get_key_slot_info(slot)
    assert info.status is cs.KeySlotStatus.EMPTY and info.versions == [] and info.head_version == 2
    with pytest.raises(cs.CryptoError) as err:
        km.load_key(slot)
    assert err.value.code is E.SLOT_EMPTY
    # A message made under version 1 must never meet another key numbered 1.
    assert km.persist_key(slot, _new_key(km)).version == 3
    with pytest.raises(cs.CryptoError) as err:
        km.load_key(slot, version=1)
    assert err.value.code is E.KEY_VERSION_RETIRED and "cleared" in err.value.message


def test_version_changes_are_audited(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    d = daemon_factory(mock_config(audit_log=str(audit)))
    with d.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot = ctx.resolve_resource("MyNewSlot", cs.ResourceType.KEY_SLOT)
        for _ in range(3):
            km.persist_key(slot, _new_key(km))
        km.retire_key_version(slot, 1)
        km.set_minimum_version(slot, 3)
        with pytest.raises(cs.CryptoError):
            km.load_key(slot, version=1)
        km.clear_key_slot(slot)
    d.stop()
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    seen = [(e["action"], e["result"], e.get("detail", "")) for e in events if e["resource"] == "MyNewSlot"]
    assert ("key.persist", "ok", "version=3") in seen
    assert ("key.retire", "ok", "version=1") in seen
    assert ("key.minimum_version", "ok", "version=3") in seen
    assert ("key.load", "KEY_VERSION_RETIRED", "version=1") in seen
    assert ("key.clear", "ok", "versions=1,2,3") in seen


# --- schema 2 (today's main) ------------------------------------------------------------------
def write_schema2_store(path: Path, kek_path: Path, material: bytes) -> None:
    """A store exactly as main's schema 2 writes it (one version per slot), with its KEK."""
    kek = os.urandom(32)
    kek_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(kek_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, kek)
    os.close(fd)
    store_id = os.urandom(16)
    keys = StoreKeys(kek, store_id)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE key_slots (name TEXT NOT NULL, version INTEGER NOT NULL,
            algorithm TEXT NOT NULL, provider INTEGER NOT NULL, compatible TEXT NOT NULL,
            permissions INTEGER NOT NULL, export_uids TEXT, secret INTEGER NOT NULL,
            blob BLOB NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
            mac BLOB NOT NULL, PRIMARY KEY (name, version));
        CREATE TABLE cert_slots (name TEXT PRIMARY KEY, der BLOB NOT NULL,
            version INTEGER NOT NULL, updated REAL NOT NULL, mac BLOB NOT NULL);
        CREATE TABLE trust_stores (name TEXT PRIMARY KEY, anchors TEXT NOT NULL,
            crls TEXT NOT NULL, version INTEGER NOT NULL, updated REAL NOT NULL,
            mac BLOB NOT NULL);
    """)
    meta = ("PreDeployedSlot", 1, "AES-256", 1, "[1]", int(P.ENCRYPT | P.DECRYPT), None, 1)
    row = (*meta, keys.wrap(meta, material, os.urandom(12)), 1.0e9, 1.0e9)
    mac = keys.mac("key", row, "cryptostack-keystore/2")
    db.execute("INSERT INTO key_slots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, mac))
    manifest = json.dumps(sorted([["key", "PreDeployedSlot", 1, mac.hex()]]))
    mac_key = keys._mac_key  # noqa: SLF001 - main's manifest MAC, as main computes it
    manifest_mac = hmac.new(
        mac_key, encode("cryptostack-manifest/2", store_id, 7, manifest), hashlib.sha256
    ).hexdigest()
    for key, value in (
        ("schema_version", "2"),
        ("store_id", store_id.hex()),
        ("kek_check", keys.kek_check()),
        ("state", "ready"),
        ("generation", "7"),
        ("manifest", manifest),
        ("manifest_mac", manifest_mac),
    ):
        db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
    db.close()


def test_a_schema2_store_from_main_is_upgraded_in_place(mock_config: MockConfig, tmp_path: Path) -> None:
    """Schema-2 stores are fully authenticated, so the daemon checks and upgrades them at
    start (keeping the file as it was); every key stays, as version 1."""
    material = b"AES-256\0" + os.urandom(32)  # the mock provider's stored form
    directory = tmp_path / "d"
    directory.mkdir()
    store = directory / "keystore.sqlite3"
    write_schema2_store(store, default_kek_file(store), material)
    with DaemonProcess(directory, mock_config()) as daemon, daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        km = ctx.create_key_management_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        info = km.get_key_slot_info(slot)
        assert info.version == 1 and [v.state for v in info.versions] == [cs.KeyVersionState.PRIMARY]
        iv = os.urandom(12)
        ct = _gcm(ctx, slot, ENC, iv, b"kept across the upgrade")
        assert km.persist_key(slot, _new_key(km)).version == 2
        with km.load_key(slot, version=1) as v1:
            assert _gcm(ctx, v1, DEC, iv, ct) == b"kept across the upgrade"
    assert "upgraded from schema 2 to 3" in daemon.log_text()
    assert list(directory.glob("keystore.sqlite3.schema2-*"))
    verify = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "keystore", "verify", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0 and "intact" in verify.stdout, verify


def test_a_tampered_schema2_store_is_not_upgraded(mock_config: MockConfig, tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    store = directory / "keystore.sqlite3"
    write_schema2_store(store, default_kek_file(store), b"AES-256\0" + os.urandom(32))
    db = sqlite3.connect(store)
    db.execute("UPDATE key_slots SET permissions = permissions | 2048")  # EXPORT
    db.commit()
    db.close()
    before = store.read_bytes()
    daemon = DaemonProcess(directory, mock_config())
    try:
        with pytest.raises(RuntimeError) as err:
            daemon.start()
    finally:
        daemon.stop()
    assert "failed authentication" in str(err.value) and "Traceback" not in str(err.value)
    assert store.read_bytes() == before and not list(directory.glob("*.schema2-*"))


def test_the_store_api_keeps_versions(tmp_path: Path) -> None:
    """The key store itself: numbering, states and what a retired row keeps."""
    from cryptostack_core.sdk import StoredKey

    store = KeyStore.open(tmp_path / "ks.sqlite3")
    for n in range(1, 4):
        assert (
            store.store_key("S", "AES-256", 1, (1,), P.ENCRYPT | P.DECRYPT, StoredKey(bytes([n]) * 40, True))
            == n
        )
    assert store.load_key("S", 2)[1].blob == bytes([2]) * 40
    assert store.retire_version("S", 2) == []  # wrapped material: nothing to destroy
    raw = (
        sqlite3.connect(tmp_path / "ks.sqlite3")
        .execute("SELECT blob, state FROM key_slots WHERE name = 'S' AND version = 2")
        .fetchone()
    )
    assert raw == (b"", "retired")  # the material is gone from the store
    store.store_key("H", "AES-256", 3, (3,), P.ENCRYPT, StoredKey(b"token-ref-1", False))
    store.store_key("H", "AES-256", 3, (3,), P.ENCRYPT, StoredKey(b"token-ref-2", False))
    assert sorted(s.blob for s in store.references(3)) == [b"token-ref-1", b"token-ref-2"]
    assert store.retire_version("H", 1) == [(3, StoredKey(b"token-ref-1", False))]
    assert [s.blob for s in store.references(3)] == [b"token-ref-2"]
    assert store.clear_slot("H") == [(3, StoredKey(b"token-ref-2", False))]
    assert store.references(3) == []
    store.close()
