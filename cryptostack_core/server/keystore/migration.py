"""Older key stores: schema 1 (cryptostack 0.1, metadata not authenticated) and schema 2
(every row MACed, one version per slot), converted to schema 3 (key versions).

* Schema 2 -> 3 needs no review: every row and the manifest are checked under the KEK
  first, then the rows get a ``state`` column and are re-sealed, in one transaction, after a
  copy of the file is kept (``<store>.schema2-<time>``). The daemon does it at start.
* Schema 1 -> 3 is ``cryptostack keystore migrate``: schema 1 authenticated only the wrapped
  material, so the other columns are taken as they are and listed for review.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cryptostack_core.sdk.provider import KekSource
from cryptostack_core.server.keystore.backend import COLUMNS, KEY_COLUMNS, TABLES, Backend, Tx
from cryptostack_core.server.keystore.errors import RECOVERY, KeyStoreError
from cryptostack_core.server.keystore.kek import FileKekSource, default_kek_path
from cryptostack_core.server.keystore.sealing import StoreKeys
from cryptostack_core.server.keystore.sqlite import SqliteBackend
from cryptostack_core.server.keystore.store import (
    ACTIVE,
    SCHEMA_VERSION,
    KeyStore,
    _Entry,
    _layout,
    _prefix,
    _same,
    open_backend,
)
from cryptostack_core.wire.permissions import KeyOperationPermission

_V2_KEY_COLUMNS = KEY_COLUMNS[:-1]  # schema 2 had no state
_V2_ROW = "cryptostack-keystore/2"
_V2_MANIFEST = "cryptostack-manifest/2"


def _backup(backend: Backend, label: str) -> Path:
    if not isinstance(backend, SqliteBackend) or backend.path is None:
        raise KeyStoreError(
            f"key store {backend.location}: only SQLite stores have schemas before {SCHEMA_VERSION}"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = backend.path.with_name(f"{backend.path.name}.{label}-{stamp}")
    with sqlite3.connect(str(target)) as copy:
        backend.raw().backup(copy)
    copy.close()
    os.chmod(target, 0o600)
    return target


def upgrade_v2(
    backend: Backend, source: KekSource, kek_file: Path, *, drop_invalid: bool = False
) -> tuple[Path, list[str], list[str]]:
    """Schema 2 -> 3 in place, after checking every row and the manifest under the KEK
    (refused, naming what fails, unless ``drop_invalid``). Returns (backup, converted,
    dropped)."""
    where = backend.location
    layout, meta = _layout(backend)
    if layout != "v2":
        raise KeyStoreError(f"key store {where} is not a schema-2 store; nothing to do")
    if not source.exists(kek_file):
        raise KeyStoreError(f"the key-encryption key {kek_file} of key store {where} is missing: {RECOVERY}")
    try:
        keys = StoreKeys(source.load_or_create(kek_file), bytes.fromhex(meta["store_id"]))
    except (KeyError, ValueError):
        raise KeyStoreError(f"key store {where} has a malformed store id: {RECOVERY}") from None
    if not _same(keys.kek_check(), meta.get("kek_check", "")):
        raise KeyStoreError(
            f"the key-encryption key {kek_file} does not belong to key store {where}: {RECOVERY}"
        )
    columns = {"key": _V2_KEY_COLUMNS, "cert": COLUMNS["cert"], "trust": COLUMNS["trust"]}
    with backend.snapshot() as tx:
        found = {
            kind: tx.execute(
                f"SELECT {', '.join(columns[kind])}, mac "  # noqa: S608
                f"FROM {TABLES[kind]}"
            )
            for kind in TABLES
        }
    text = meta.get("manifest", "")
    try:
        generation = int(meta["generation"])
        if not _same(keys.manifest_mac(generation, text, _V2_MANIFEST), meta.get("manifest_mac", "")):
            raise ValueError("manifest")
        listed = {(str(k), str(n)): (int(v), str(m)) for k, n, v, m in json.loads(text)}
    except (KeyError, ValueError, TypeError):
        raise KeyStoreError(
            f"key store {where} (schema 2): the manifest is missing or fails authentication: {RECOVERY}"
        ) from None
    converted: list[str] = []
    dropped: list[str] = []
    keep: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in TABLES}
    seen = set()
    for kind, table_rows in found.items():
        for row in table_rows:
            name, mac = str(row[0]), bytes(row[-1])
            version = row[1] if kind == "key" else row[2] if kind == "cert" else row[3]
            label = f"{kind} {name!r} v{version}"
            if not keys.check(kind, tuple(row[:-1]), mac, _V2_ROW):
                dropped.append(f"{label}: fails authentication")
            elif listed.get((kind, name)) != (version, mac.hex()):
                dropped.append(f"{label}: is not the row the manifest lists")
            else:
                keep[kind].append(tuple(row[:-1]))
                converted.append(label)
                seen.add((kind, name))
    dropped += [
        f"{kind} {name!r} v{version}: missing"
        for (kind, name), (version, _) in listed.items()
        if (kind, name) not in seen
    ]
    if dropped and not drop_invalid:
        raise KeyStoreError(
            f"key store {where} (schema 2) failed authentication, so it is not "
            f"upgraded: {'; '.join(dropped[:8])}. {RECOVERY}; or `cryptostack "
            "keystore migrate --drop-invalid --config FILE` converts it without "
            "those rows"
        )
    backup = _backup(backend, "schema2")
    store = KeyStore(backend, keys)
    with backend.transaction() as tx:
        tx.execute("ALTER TABLE key_slots ADD COLUMN state TEXT NOT NULL DEFAULT 'active'")
        for table in TABLES.values():
            tx.execute(f"DELETE FROM {table}")  # noqa: S608
        entries = _insert(
            tx,
            keys,
            {kind: [(*r, ACTIVE) if kind == "key" else r for r in rows] for kind, rows in keep.items()},
        )
        store._write_meta(tx, {"schema_version": str(SCHEMA_VERSION)})
        store._write_manifest(tx, generation + 1, entries)
    return backup, converted, dropped


def _insert(tx: Tx, keys: StoreKeys, rows: dict[str, list[tuple[Any, ...]]]) -> dict[tuple[str, str], _Entry]:
    entries: dict[tuple[str, str], _Entry] = {}
    for kind, kind_rows in rows.items():
        columns = COLUMNS[kind]
        for row in kind_rows:
            mac = keys.mac(kind, row)
            tx.execute(
                f"INSERT INTO {TABLES[kind]} ({', '.join(columns)}, mac) VALUES "  # noqa: S608
                f"({', '.join('?' * (len(row) + 1))})",
                (*row, mac),
            )
            version = int(row[1] if kind == "key" else row[2] if kind == "cert" else row[3])
            entry = entries.setdefault((kind, str(row[0])), _Entry())
            entry.head = max(entry.head, version)
            entry.rows[version] = _prefix(mac)
    return entries


def migrate_v1(
    path: Path,
    kek_source: KekSource | None = None,
    kek_path: Path | None = None,
    *,
    drop_invalid: bool = False,
) -> tuple[Path, list[str], list[str]]:
    """Convert a schema-1 store in place (a backup copy is kept).

    Schema 1 authenticated only the wrapped material (bound to slot name, version,
    provider and algorithm). Every secret row must still unwrap under the KEK; its other
    columns are taken as they are -- the caller shows them for review. Returns (backup
    path, rows converted, rows dropped).
    """
    source = kek_source or FileKekSource()
    kek_file = kek_path or default_kek_path(path)
    if not path.exists():
        raise KeyStoreError(f"no key store at {path}")
    backend = SqliteBackend(path, create=False)
    try:
        if _layout(backend)[0] != "v1":
            raise KeyStoreError(f"key store {path} is not a schema-1 store; nothing to do")
        if not source.exists(kek_file):
            raise KeyStoreError(
                f"the key-encryption key {kek_file} is missing; schema-1 "
                "material cannot be unwrapped without it"
            )
        kek = source.load_or_create(kek_file)
        old = AESGCM(kek)
        keys = StoreKeys(kek, os.urandom(16))
        converted: list[str] = []
        dropped: list[str] = []
        rows: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in TABLES}
        with backend.snapshot() as tx:
            key_rows = tx.execute(
                "SELECT name, algorithm, provider, compatible, permissions, "
                "version, secret, blob, created, updated FROM key_slots"
            )
            cert_rows = tx.execute("SELECT name, der, version, updated FROM cert_slots")
            trust_rows = tx.execute("SELECT name, anchors, crls, version, updated FROM trust_stores")
        for r in key_rows:
            name, algorithm, provider, compatible, perms, version, secret, blob = r[:8]
            try:
                compat = [int(c) for c in json.loads(compatible)]
                material = bytes(blob)
                if secret:
                    aad = json.dumps(["cryptostack-slot/1", name, version, provider, algorithm]).encode()
                    material = old.decrypt(material[:12], material[12:], aad)
            except Exception as exc:  # noqa: BLE001 - reported per row
                dropped.append(f"key slot {name!r} v{version}: {type(exc).__name__ or exc}")
                continue
            meta = (
                name,
                version,
                algorithm,
                provider,
                json.dumps(compat),
                int(perms),
                None,
                int(bool(secret)),
            )
            if secret:
                material = keys.wrap(meta, material, os.urandom(12))
            rows["key"].append((*meta, material, r[8], r[9], ACTIVE))
            converted.append(
                f"key slot {name!r} v{version}: {algorithm} on provider "
                f"{provider}, permissions "
                f"{KeyOperationPermission(perms).name or 'none'}, compatible "
                f"{compat}, {'wrapped' if secret else 'provider-held'}"
            )
        for r in cert_rows:
            rows["cert"].append((r[0], bytes(r[1]), r[2], r[3]))
            converted.append(f"certificate slot {r[0]!r} v{r[2]}")
        for r in trust_rows:
            try:
                for column in (r[1], r[2]):
                    [bytes.fromhex(h) for h in json.loads(column)]
            except (ValueError, TypeError) as exc:
                dropped.append(f"trust store {r[0]!r}: malformed ({exc})")
                continue
            rows["trust"].append(tuple(r))
            converted.append(f"trust store {r[0]!r} v{r[3]}")
        if dropped and not drop_invalid:
            raise KeyStoreError(
                "schema-1 rows that do not unwrap or parse: "
                + "; ".join(dropped)
                + " -- nothing was changed; rerun with --drop-invalid to "
                "convert without them"
            )
        backup = _backup(backend, "schema1")
        store = KeyStore(backend, keys)
        with backend.transaction() as tx:
            for table in (*TABLES.values(), "meta"):
                tx.execute(f"DROP TABLE IF EXISTS {table}")  # noqa: S608
            backend.create_schema(tx)
            entries = _insert(tx, keys, rows)
            store._write_meta(
                tx,
                {
                    "schema_version": str(SCHEMA_VERSION),
                    "store_id": keys.store_id.hex(),
                    "kek_check": keys.kek_check(),
                    "state": "ready",
                },
            )
            store._write_manifest(tx, 1, entries)
        return backup, converted, dropped
    finally:
        backend.close()


def migrate(
    location: Path | str,
    kek_source: KekSource | None = None,
    kek_path: Path | None = None,
    *,
    drop_invalid: bool = False,
) -> tuple[int, Path, list[str], list[str]]:
    """``cryptostack keystore migrate``: schema 1 or 2 to 3. Returns (schema it had, backup,
    converted, dropped)."""
    if not isinstance(location, Path):
        raise KeyStoreError(
            f"key store {location}: only SQLite stores have schemas before "
            f"{SCHEMA_VERSION}; nothing to migrate"
        )
    backend = open_backend(location, create=False)
    try:
        layout = _layout(backend)[0]
        if layout == "v2":
            source = kek_source or FileKekSource()
            return (
                2,
                *upgrade_v2(
                    backend, source, kek_path or default_kek_path(location), drop_invalid=drop_invalid
                ),
            )
    finally:
        backend.close()
    if layout == "v1":
        return (1, *migrate_v1(location, kek_source, kek_path, drop_invalid=drop_invalid))
    raise KeyStoreError(
        f"key store {location} has schema {SCHEMA_VERSION} already; nothing to migrate"
        if layout == "v3"
        else f"key store {location} cannot be migrated ({layout})"
    )


def set_aside(location: Path | str, kek_path: Path | None = None) -> list[str]:
    """Set a store and its KEK file aside (renamed, never deleted): a SQLite file with its
    WAL files, or a shared store's tables; returns what was moved. The next start creates a
    fresh, empty store."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved: list[str] = []
    if isinstance(location, Path):
        items = [location, Path(f"{location}-wal"), Path(f"{location}-shm")]
    else:
        backend = open_backend(location, create=False)
        try:
            moved += backend.rename_tables(f"reset_{stamp.replace('-', '_')}")
        finally:
            backend.close()
        items = []
    kek = kek_path or (default_kek_path(location) if isinstance(location, Path) else None)
    if kek is not None:
        items.append(kek)
    for item in items:
        if item.exists():
            target = item.with_name(f"{item.name}.reset-{stamp}")
            shutil.move(str(item), str(target))
            moved.append(str(target))
    return moved


def open_store(
    location: Path | str | None, kek_source: KekSource | None = None, kek_path: Path | None = None
) -> KeyStore:
    """:meth:`KeyStore.open` for a daemon: a schema-2 store (whose rows are all
    authenticated, so nothing needs review) is verified and upgraded in place first, keeping
    a copy; ``store.notes`` says so."""
    notes = []
    if isinstance(location, Path) and location.exists():
        backend = open_backend(location, create=False)
        try:
            if _layout(backend)[0] == "v2":
                backup, converted, _ = upgrade_v2(
                    backend, kek_source or FileKekSource(), kek_path or default_kek_path(location)
                )
                notes.append(
                    f"key store {location} upgraded from schema 2 to "
                    f"{SCHEMA_VERSION} (key versions; {len(converted)} rows checked "
                    f"and re-sealed); the schema-2 file is kept as {backup}"
                )
        finally:
            backend.close()
    store = KeyStore.open(location, kek_source, kek_path)
    store.notes += notes
    return store
