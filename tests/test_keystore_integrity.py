"""The key store at rest (issue 10, finding 6): someone who can write the database but not
read the KEK must not be able to widen a key, plant one, or make the daemon lose keys
silently; a damaged store stops the daemon with a clear message and a recovery command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import cryptostack_core as cs
from cryptostack_core import KeyOperationPermission as P
from cryptostack_core.sdk import StoredKey
from cryptostack_core.server.keystore import KeyStore, KeyStoreError
from cryptostack_core.server.paths import default_kek_file
from cryptostack_core.testing.daemon import DaemonProcess

MockConfig = Callable[..., dict[str, Any]]


def populated(path: Path) -> None:
    store = KeyStore.open(path)
    for _ in range(3):  # versions 1 (retired), 2, 3 (primary); minimum 2
        store.store_key(
            "Slot",
            "AES-256",
            1,
            (1, 5),
            P.ENCRYPT | P.DECRYPT,
            StoredKey(b"AES-256\0" + os.urandom(32), True),
        )
    store.retire_version("Slot", 1)
    store.set_minimum_version("Slot", 2)
    store.store_key(
        "Hsm", "AES-256", 3, (3,), P.ENCRYPT, StoredKey(b"token-object-7", False), export_uids=frozenset({0})
    )
    store.store_certificate("Cert", b"0\x82\x01\x00" + os.urandom(64))
    store.store_trust_store("Roots", [os.urandom(40), os.urandom(40)], [os.urandom(30)])
    store.close()


def tamper(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


TAMPERING = {
    "permissions widened": ("UPDATE key_slots SET permissions = permissions | 2048 WHERE name = 'Slot'",),
    "secret flag cleared, plaintext planted": (
        "UPDATE key_slots SET secret = 0, blob = X'4145532D32353600" + "11" * 32 + "' WHERE name = 'Slot'",
    ),
    "compatible list changed": ("UPDATE key_slots SET compatible = '[1, 5, 9]' WHERE name = 'Slot'",),
    "compatible list not JSON": ("UPDATE key_slots SET compatible = 'oops' WHERE name = 'Slot'",),
    "provider changed": ("UPDATE key_slots SET provider = 5 WHERE name = 'Slot'",),
    "algorithm changed": ("UPDATE key_slots SET algorithm = 'AES-128' WHERE name = 'Slot'",),
    "version changed": ("UPDATE key_slots SET version = 7 WHERE name = 'Slot' AND version = 3",),
    "slot renamed": ("UPDATE key_slots SET name = 'Elsewhere' WHERE name = 'Slot'",),
    "export allow-list removed": ("UPDATE key_slots SET export_uids = NULL WHERE name = 'Hsm'",),
    "provider reference swapped": ("UPDATE key_slots SET blob = X'00' WHERE name = 'Hsm'",),
    "certificate replaced": ("UPDATE cert_slots SET der = X'3000'",),
    "trust-store row truncated": ("UPDATE trust_stores SET anchors = substr(anchors, 1, 9)",),
    "one key row deleted": ("DELETE FROM key_slots WHERE name = 'Hsm'",),
    "trust store deleted": ("DELETE FROM trust_stores",),
    "row added": (
        "INSERT INTO key_slots SELECT 'Extra', version, algorithm, provider, "
        "compatible, permissions, export_uids, secret, blob, created, updated, state, "
        "mac FROM key_slots WHERE name = 'Slot'",
    ),
    "version added": (
        "INSERT INTO key_slots SELECT name, 9, algorithm, provider, "
        "compatible, permissions, export_uids, secret, blob, created, updated, "
        "state, mac FROM key_slots WHERE name = 'Slot' AND version = 3",
    ),
    "retired version revived": ("UPDATE key_slots SET state = 'active' WHERE name = 'Slot' AND version = 1",),
    "minimum version lowered": (
        "UPDATE meta SET value = replace(value, '\"Slot\",3,2,', '\"Slot\",3,0,') WHERE key = 'manifest'",
    ),
    "older version deleted": ("DELETE FROM key_slots WHERE name = 'Slot' AND version = 2",),
    "manifest removed": ("DELETE FROM meta WHERE key = 'manifest'",),
    "manifest generation changed": ("UPDATE meta SET value = '99' WHERE key = 'generation'",),
    "every row deleted": ("DELETE FROM key_slots", "DELETE FROM cert_slots", "DELETE FROM trust_stores"),
    "store emptied, metadata too": (
        "DELETE FROM key_slots",
        "DELETE FROM cert_slots",
        "DELETE FROM trust_stores",
        "DELETE FROM meta",
    ),
    "tables dropped": (
        "DROP TABLE key_slots",
        "DROP TABLE cert_slots",
        "DROP TABLE trust_stores",
        "DROP TABLE meta",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_every_change_outside_the_daemon_is_refused(tmp_path: Path, name: str) -> None:
    """Finding 6: permissions, secret flag, compatible list and missing rows were not bound."""
    path = tmp_path / "ks.sqlite3"
    populated(path)
    tamper(path, *TAMPERING[name])
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(path)
    assert "cryptostack keystore" in err.value.message, err.value.message
    assert err.value.code is cs.ErrorCode.INTERNAL_ERROR


def test_an_intact_store_reopens_with_every_row(tmp_path: Path) -> None:
    path = tmp_path / "ks.sqlite3"
    populated(path)
    store = KeyStore.open(path)
    assert store.verify() == []
    record, stored = store.load_key("Slot")
    assert record.compatible == (1, 5) and record.permissions == P.ENCRYPT | P.DECRYPT
    assert stored.secret and stored.blob.startswith(b"AES-256\0")
    hsm = store.slot("Hsm")
    assert hsm is not None and hsm.export_uids == frozenset({0})
    assert store.trust_store("Roots") is not None and store.certificate("Cert") is not None
    store.clear_slot("Hsm")  # legitimate changes keep the manifest in step
    store.store_key("Slot", "AES-256", 1, (1,), P.ENCRYPT, StoredKey(b"AES-256\0" + bytes(32), True))
    store.close()
    store = KeyStore.open(path)
    assert store.slot("Hsm") is None and store.slot("Slot").version == 4  # type: ignore[union-attr]
    versions = store.slot_versions("Slot")
    assert [(v.version, v.state) for v in versions.versions] == [
        (1, "retired"),
        (2, "active"),
        (3, "active"),
        (4, "active"),
    ]
    assert versions.min_version == 2 and versions.head == 4
    store.close()


@pytest.mark.parametrize("how", ["newest version deleted", "retired row replaced by its earlier copy"])
def test_a_row_rolled_back_to_an_older_version_is_refused(tmp_path: Path, how: str) -> None:
    path = tmp_path / "ks.sqlite3"
    populated(path)
    db = sqlite3.connect(path)
    old = db.execute("SELECT * FROM key_slots WHERE name = 'Slot' AND version = 2").fetchone()
    db.close()
    store = KeyStore.open(path)
    store.store_key("Slot", "AES-256", 1, (1,), P.ENCRYPT, StoredKey(b"AES-256\0" + bytes(32), True))
    store.retire_version("Slot", 2)
    store.close()
    if how == "newest version deleted":  # the slot is back at version 3
        tamper(path, "DELETE FROM key_slots WHERE name = 'Slot' AND version = 4")
    else:  # version 2's key, destroyed by retiring it, comes back
        marks = ", ".join("?" * len(old))
        tamper(path, "DELETE FROM key_slots WHERE name = 'Slot' AND version = 2")
        db = sqlite3.connect(path)
        db.execute(f"INSERT INTO key_slots VALUES ({marks})", old)
        db.commit()
        db.close()
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(path)
    assert "rolled back" in err.value.message


def test_a_missing_kek_is_never_regenerated(tmp_path: Path) -> None:
    """Finding 6: a deleted KEK was silently regenerated, then every slot failed at use."""
    path = tmp_path / "ks.sqlite3"
    populated(path)
    kek = tmp_path / "ks.sqlite3.kek"
    kek.unlink()
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(path)
    assert "missing" in err.value.message and not kek.exists()
    # A KEK from elsewhere does not fit either.
    kek.write_bytes(os.urandom(32))
    os.chmod(kek, 0o600)
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(path)
    assert "does not belong" in err.value.message


def test_a_deleted_store_beside_its_kek_is_refused(tmp_path: Path) -> None:
    """Finding 6: a deleted database re-provisioned every slot with new keys."""
    path = tmp_path / "ks.sqlite3"
    populated(path)
    for f in tmp_path.glob("ks.sqlite3*"):
        if not f.name.endswith(".kek"):
            f.unlink()
    with pytest.raises(KeyStoreError) as err:
        KeyStore.open(path)
    assert "missing or empty" in err.value.message


def test_a_half_initialised_store_completes(tmp_path: Path) -> None:
    """A crash between creating the store and its KEK is not mistaken for tampering."""
    path = tmp_path / "ks.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "INSERT INTO meta VALUES ('schema_version', '2'), ('store_id', ?), ('state', 'initialising')",
        (os.urandom(16).hex(),),
    )
    db.commit()
    db.close()
    KeyStore.open(path).close()
    KeyStore.open(path).close()


# --- schema 1 (cryptostack 0.1, today's main) ---------------------------------------------------
_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS key_slots (
    name TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    provider INTEGER NOT NULL,
    compatible TEXT NOT NULL,
    permissions INTEGER NOT NULL,
    version INTEGER NOT NULL,
    secret INTEGER NOT NULL,
    blob BLOB NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cert_slots (
    name TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trust_stores (
    name TEXT PRIMARY KEY,
    anchors TEXT NOT NULL,
    crls TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def write_schema1_store(
    path: Path, slots: dict[str, tuple[str, int, list[int], int, bytes]], kek_path: Path
) -> None:
    """A store exactly as cryptostack 0.1 wrote it, and its KEK file at ``kek_path``."""
    kek = os.urandom(32)
    kek_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(kek_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, kek)
    os.close(fd)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_V1_SCHEMA)
    now = time.time()
    for name, (algorithm, provider, compatible, permissions, material) in slots.items():
        nonce = os.urandom(12)
        aad = json.dumps(["cryptostack-slot/1", name, 1, provider, algorithm]).encode()
        blob = nonce + AESGCM(kek).encrypt(nonce, material, aad)
        db.execute(
            "INSERT INTO key_slots VALUES (?, ?, ?, ?, ?, 1, 1, ?, ?, ?)",
            (name, algorithm, provider, json.dumps(compatible), permissions, blob, now, now),
        )
    db.close()


def test_a_schema1_store_is_refused_then_migrated(mock_config: MockConfig, tmp_path: Path) -> None:
    """Finding 6: today's stores open after `cryptostack keystore migrate`, keys intact."""
    key = os.urandom(32)
    directory = tmp_path / "d"
    directory.mkdir()
    store = directory / "keystore.sqlite3"
    write_schema1_store(
        store,
        {"PreDeployedSlot": ("AES-256", 1, [1], int(P.ENCRYPT | P.DECRYPT), b"AES-256\0" + key)},
        default_kek_file(store),
    )
    daemon = DaemonProcess(directory, mock_config())
    try:
        with pytest.raises(RuntimeError) as err:
            daemon.start()
    finally:
        daemon.stop()  # in case it started after all
    assert "schema 1" in str(err.value) and "cryptostack keystore migrate" in str(err.value)
    assert "Traceback" not in str(err.value)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cryptostack_core",
            "keystore",
            "migrate",
            "--config",
            str(daemon.config_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "PreDeployedSlot" in run.stdout and "ENCRYPT|DECRYPT" in run.stdout
    assert list(directory.glob("keystore.sqlite3.schema1-*"))
    verify = subprocess.run(
        [sys.executable, "-m", "cryptostack_core", "keystore", "verify", "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0 and "intact" in verify.stdout
    with daemon, daemon.stack() as stack:
        ctx = stack.create_crypto_context()
        slot = ctx.resolve_resource("PreDeployedSlot", cs.ResourceType.KEY_SLOT)
        enc = ctx.create_cipher_context(
            cs.CipherContextConfig()
            .set_algorithm("AES-256-CBC")
            .set_key(slot)
            .set_direction(cs.CipherDirection.ENCRYPT)
        )
        enc.init(bytes(16))
        ct = enc.update(b"sixteen byte msg") + enc.finalize()
    expected = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    assert ct[:16] == expected.update(b"sixteen byte msg")


def test_the_daemon_refuses_a_tampered_store_and_never_reprovisions(
    mock_config: MockConfig, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """Finding 6: an emptied store was re-provisioned with new keys; corruption gave a
    start-up traceback."""
    d = daemon_factory(mock_config())
    d.stop()
    store = d.directory / "keystore.sqlite3"
    for name, statements in (
        ("permissions", TAMPERING["permissions widened"]),
        ("emptied", TAMPERING["every row deleted"]),
        ("not json", ("UPDATE key_slots SET compatible = 'oops'",)),
    ):
        backup = store.read_bytes()
        tamper(store, *[s.replace("'Slot'", "'PreDeployedSlot'") for s in statements])
        tampered = store.read_bytes()
        try:
            with pytest.raises(RuntimeError) as err:
                d.start()
        finally:
            d.stop()  # in case it started after all
        message = str(err.value)
        assert "exited with 1" in message and "cryptostack keystore" in message, (name, message)
        assert "Traceback" not in message, message
        assert store.read_bytes() == tampered, f"{name}: the daemon changed the store"
        store.write_bytes(backup)
        for wal in d.directory.glob("keystore.sqlite3-*"):
            wal.unlink()
    # The recovery commands: verify explains, repair re-seals what is left, reset starts over.
    tamper(store, "DELETE FROM key_slots WHERE name = 'SigningKey'")
    cli = [sys.executable, "-m", "cryptostack_core", "keystore"]
    out = subprocess.run(
        [*cli, "verify", "--config", str(d.config_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1 and "'SigningKey'" in out.stdout and "missing" in out.stdout
    assert (
        subprocess.run(
            [*cli, "repair", "--config", str(d.config_path)], capture_output=True, check=False
        ).returncode
        == 1
    )  # needs --yes
    out = subprocess.run(
        [*cli, "repair", "--yes", "--config", str(d.config_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "SigningKey" in out.stdout, out
    d.start()  # SigningKey is provisioned afresh: the operator chose so
    with d.stack() as stack:
        slots = {s["name"]: s for s in stack.status()["key_slots"]}
        assert slots["SigningKey"]["status"] == "OCCUPIED"
        assert slots["PreDeployedSlot"]["version"] == 1
    d.stop()
    out = subprocess.run(
        [*cli, "reset", "--yes", "--config", str(d.config_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "set aside" in out.stdout
    assert not store.exists() and list(d.directory.glob("keystore.sqlite3.reset-*"))
    d.start()
