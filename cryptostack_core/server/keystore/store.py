"""The persistent key store: key slots with versions, certificate slots and trust stores.

Engines (:mod:`.backend`): SQLite (one file, the default) or PostgreSQL (shared by several
daemons). The semantics below are the same on both; the store never sees a plaintext key
of a software provider (it wraps it) and keeps only references for providers that hold
their own keys (HSM, TPM).

**Versions** (schema 3, the Tink keyset / Vault transit model). A slot holds numbered
versions of its key. Persisting adds a version, numbered one past the highest the slot ever
had (numbers are never reused, not even after a clear), and makes it the *primary*: the one
new encryptions and signatures use. Older versions stay *active* -- usable to decrypt,
verify, decapsulate -- until *retired* by an explicit call, which destroys their material
(the row stays, so an attempt to use it says "retired", not "authentication failed"). A
*minimum version* per slot disables the versions below it without destroying them (it can
be lowered again). Clearing a slot removes every version.

**Authenticity.** Whoever can write the database but not read the KEK must not be able to
change what a key may do, plant a key, or make the daemon lose keys silently:

- every row carries an HMAC-SHA-256 over all its columns (a key version's name, number,
  algorithm, provider, compatible providers, permissions, export allow-list, secret flag,
  material, times and state; certificate DER; trust-store anchors and CRLs);
- secret material is wrapped with AES-256-GCM whose associated data is the row's metadata,
  so a blob moved to another row, or under changed metadata, does not unwrap;
- an authenticated **manifest** (in ``meta``) lists, per slot, the highest version ever
  given, the minimum version and every existing version with the first 8 bytes of its
  row's MAC, under a **generation** counter: rows that disappear, reappear, are replaced by
  an older copy or are added are detected (at open, and on every read: a row is used only
  if it is the one the manifest lists);
- a check value proves the KEK belongs to this store.

**Many writers.** Every change runs in one transaction under the store-wide write lock
(SQLite ``BEGIN IMMEDIATE``; PostgreSQL an advisory transaction lock), re-reads the manifest
inside it, checks the rows it touches, and commits the rows and the next generation of the
manifest together. So writers on several threads, processes or daemons serialise: two
persists into one slot get two consecutive version numbers, never the same one, and
neither is lost. Readers take consistent snapshots (the manifest and the rows from the same
moment). A daemon caches the manifest and the rows it checked, and uses them while the
backend says nothing changed (:meth:`~.backend.Backend.changed`: SQLite's
``data_version``, PostgreSQL's notifications); a version it does not know is read through.
A generation lower than one this process has seen means the whole store was replaced by an
older copy while running: refused.

**Versions of several provider blobs** (a hybrid key split over two providers,
:mod:`.parts`): one row like any other, whose ``provider`` is 0 and whose wrapped blob lists
the parts, each with its provider and that provider's blob; so such a version is MACed,
listed, retired and cleared by the same rules, and its parts' references are found by
unwrapping it (:meth:`KeyStore.references`, :meth:`KeyStore.retire_version`,
:meth:`KeyStore.clear_slot`).
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag

from cryptostack_core.sdk.provider import KekSource, StoredKey
from cryptostack_core.server.keystore.backend import (
    CERT_COLUMNS,
    COLUMNS,
    KEY_COLUMNS,
    TABLES,
    TRUST_COLUMNS,
    Backend,
    Row,
    Tx,
)
from cryptostack_core.server.keystore.errors import (
    RECOVERY,
    KeyStoreError,
    KeyStoreUnavailable,
    Problem,
)
from cryptostack_core.server.keystore.kek import FileKekSource, default_kek_path
from cryptostack_core.server.keystore.parts import SPLIT_PROVIDER, decode_parts
from cryptostack_core.server.keystore.postgres import PostgresBackend
from cryptostack_core.server.keystore.sealing import KEK_SIZE, StoreKeys
from cryptostack_core.server.keystore.sqlite import SqliteBackend
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission

SCHEMA_VERSION = 3
ACTIVE = "active"
RETIRED = "retired"
_PREFIX = 8  # bytes of a row's MAC the manifest lists (identifies the row; the MAC authenticates)
_KEY_SELECT = f"SELECT {', '.join(KEY_COLUMNS)}, mac FROM key_slots"  # noqa: S608
_SELECT = {
    kind: f"SELECT {', '.join(columns)}, mac FROM {TABLES[kind]}"  # noqa: S608
    for kind, columns in COLUMNS.items()
}
_VERSION_INDEX = {"key": 1, "cert": 2, "trust": 3}


@dataclass(frozen=True)
class SlotRecord:
    """One stored key version's metadata (material still wrapped)."""

    name: str
    algorithm: str
    provider: int
    compatible: tuple[int, ...]
    permissions: KeyOperationPermission
    version: int
    created: float
    updated: float
    export_uids: frozenset[int] | None = None
    """uids that may export this material, narrowed at every copy since it was created or
    imported (None: only the slot's own rule applies)."""
    state: str = ACTIVE
    """``active`` or ``retired`` (material destroyed)."""
    primary: bool = True
    """Whether this is the slot's primary version (the newest active one)."""


@dataclass(frozen=True)
class SlotVersions:
    """Every version a slot holds, and its settings."""

    name: str
    head: int
    """Highest version number the slot ever had (0: never used)."""
    min_version: int
    """Versions below this are disabled (0: none)."""
    versions: tuple[SlotRecord, ...]
    """Existing versions, oldest first (retired ones included)."""

    @property
    def primary(self) -> SlotRecord | None:
        """The version new encryptions use; None when the slot is empty."""
        return next((v for v in self.versions if v.primary), None)


@dataclass
class _Entry:
    """A manifest entry: the versions of one slot (or the one row of a certificate slot or
    trust store) and the prefix of each row's MAC."""

    head: int = 0
    min_version: int = 0
    rows: dict[int, str] = field(default_factory=dict)

    def copy(self) -> _Entry:
        return _Entry(self.head, self.min_version, dict(self.rows))


Key = tuple[str, str]  # kind, name


@dataclass(frozen=True)
class _Manifest:
    generation: int
    text: str
    entries: dict[Key, _Entry]


def _prefix(mac: bytes) -> str:
    return mac[:_PREFIX].hex()


def _mac_of(row: Row) -> bytes:
    return bytes(row[-1]) if isinstance(row[-1], bytes) else b""


def _version_of(kind: str, row: Row) -> int | None:
    value = row[_VERSION_INDEX[kind]]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _manifest_text(entries: dict[Key, _Entry]) -> str:
    return json.dumps(
        sorted(
            [kind, name, e.head, e.min_version, sorted([v, p] for v, p in e.rows.items())]
            for (kind, name), e in entries.items()
        ),
        separators=(",", ":"),
    )


def _parse_manifest(text: str) -> dict[Key, _Entry]:
    entries: dict[Key, _Entry] = {}
    for kind, name, head, minimum, rows in json.loads(text):
        if kind not in TABLES or not isinstance(name, str):
            raise ValueError("bad entry")
        entries[(kind, name)] = _Entry(int(head), int(minimum), {int(v): str(p) for v, p in rows})
    return entries


def open_backend(location: Path | str | None, *, create: bool = True) -> Backend:
    """The backend for ``location``: a ``postgresql://`` URL, a SQLite file, or None for a
    store in memory."""
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(location)
    return SqliteBackend(Path(location) if location is not None else None, create=create)


class KeyStore:
    """The key store over one backend; thread-safe.

    Use :meth:`open` (it verifies the whole store); the constructor is internal.
    """

    def __init__(self, backend: Backend, keys: StoreKeys) -> None:
        self.backend = backend
        self._keys = keys
        self._lock = threading.Lock()
        """Guards the caches only; never held while the database is asked (a slow or lost
        database must not stall uses of what is cached)."""
        self._manifest: _Manifest | None = None
        self._seen_generation = 0
        self._slots: dict[str, tuple[_Entry | None, tuple[Row, ...]]] = {}
        """Verified rows of each slot, valid while the manifest entry is the same."""
        self._verified: dict[tuple[str, str, int | None], Row] = {}
        """Rows whose MAC was checked, byte for byte: reading one again needs no HMAC."""
        self.notes: list[str] = []
        """What the operator should hear about opening (an upgrade, where its backup is)."""

    @property
    def location(self) -> str:
        """Where the store is (file, ``:memory:`` or a URL without password)."""
        return self.backend.location

    @property
    def path(self) -> Path | None:
        """The SQLite file, if the store is one."""
        path = getattr(self.backend, "path", None)
        return path if isinstance(path, Path) else None

    @property
    def generation(self) -> int:
        """The manifest generation this process last saw."""
        return self._manifest.generation if self._manifest is not None else 0

    # --- opening ---------------------------------------------------------------------
    @classmethod
    def open(
        cls, location: Path | str | None, kek_source: KekSource | None = None, kek_path: Path | None = None
    ) -> KeyStore:
        """Open (creating on first start) the store and its KEK, after verifying both.

        ``location``: a SQLite file, a ``postgresql://`` URL, or None (in memory, with a
        random KEK). Raises :class:`KeyStoreError` for a store that fails authentication,
        lost rows, a KEK that is missing or belongs to another store, a store missing or
        emptied beside an existing KEK, and a store of an older schema (``cryptostack
        keystore migrate`` converts it; :func:`~.migration.open_store` upgrades schema 2 on
        the way).
        """
        if location is None:
            backend = open_backend(None)
            store = cls(backend, StoreKeys(os.urandom(KEK_SIZE), os.urandom(16)))
            with backend.transaction() as tx:
                backend.create_schema(tx)
                store._write_meta(
                    tx,
                    {
                        "schema_version": str(SCHEMA_VERSION),
                        "store_id": store._keys.store_id.hex(),
                        "kek_check": store._keys.kek_check(),
                        "state": "ready",
                    },
                )
                store._write_manifest(tx, 0, {})
            store._manifest = _Manifest(0, _manifest_text({}), {})
            return store
        source = kek_source or FileKekSource()
        kek_file = kek_path or _default_kek(location)
        backend = open_backend(location)
        try:
            store = cls._open_checked(backend, source, kek_file)
        except BaseException:
            backend.close()
            raise
        problems = store.verify()
        if problems:
            store.close()
            listed = "; ".join(str(p) for p in problems[:8])
            more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
            raise KeyStoreError(
                f"key store {backend.location} failed authentication: {listed}"
                f"{more}. The daemon will not start on it: {RECOVERY}"
            )
        return store

    @classmethod
    def open_unverified(
        cls, location: Path | str, kek_source: KekSource | None = None, kek_path: Path | None = None
    ) -> KeyStore:
        """Open an existing store after the KEK checks only (for ``verify`` and ``repair``);
        never creates one."""
        if isinstance(location, Path) and not location.exists():
            raise KeyStoreError(f"there is no key store at {location}")
        backend = open_backend(location, create=False)
        try:
            return cls._open_checked(
                backend, kek_source or FileKekSource(), kek_path or _default_kek(location), create=False
            )
        except BaseException:
            backend.close()
            raise

    @classmethod
    def _open_checked(
        cls, backend: Backend, source: KekSource, kek_file: Path, create: bool = True
    ) -> KeyStore:
        where = backend.location
        layout, meta = _layout(backend)
        if layout == "v1":
            raise KeyStoreError(
                f"key store {where} has schema 1 (cryptostack 0.1), whose metadata is not "
                f"authenticated. Run `cryptostack keystore migrate --config FILE` to convert it "
                f"(it keeps a backup and every key; review the slots it lists)"
            )
        if layout == "v2":
            raise KeyStoreError(
                f"key store {where} has schema 2: `cryptostack keystore "
                "migrate --config FILE` converts it (the daemon does at start)"
            )
        if layout == "newer":
            raise KeyStoreError(
                f"key store {where} was written by a newer cryptostack "
                f"(schema above {SCHEMA_VERSION}); upgrade this daemon"
            )
        if layout in ("empty", "initialising"):
            if layout == "empty" and source.exists(kek_file):
                raise KeyStoreError(
                    f"key store {where} is missing or empty, but its key-encryption key "
                    f"{_kek_name(source, kek_file)} exists: the store was deleted, emptied or "
                    f"moved, and its keys would be replaced by new ones. The daemon will not "
                    f"start: {RECOVERY}"
                )
            if not create:
                raise KeyStoreError(f"key store {where} is empty (never initialised)")
            return cls._create(backend, source, kek_file)
        if layout != "v3" or "store_id" not in meta or "kek_check" not in meta:
            raise KeyStoreError(
                f"key store {where} has lost its metadata (the meta table was "
                f"emptied or altered). The daemon will not start: {RECOVERY}"
            )
        if not source.exists(kek_file):
            raise KeyStoreError(
                f"the key-encryption key {_kek_name(source, kek_file)} of key store {where} is "
                f"missing; a new one would make every stored key unusable, so none is created. "
                f"Restore it from a backup; if it is lost, so are the keys: {RECOVERY}"
            )
        keys = _keys(source.load_or_create(kek_file), meta, where)
        if not _same(keys.kek_check(), meta["kek_check"]):
            raise KeyStoreError(
                f"the key-encryption key {_kek_name(source, kek_file)} does not belong to key "
                f"store {where} (replaced, or the store was copied from elsewhere): {RECOVERY}"
            )
        return cls(backend, keys)

    @classmethod
    def _create(cls, backend: Backend, source: KekSource, kek_file: Path) -> KeyStore:
        # Order matters for crash safety: the store says "initialising" before a KEK exists,
        # so a KEK beside an empty store is never ours to reuse unless the store says so.
        # Daemons racing to create one shared store serialise on the write lock; the first
        # writes the KEK check, the others must match it.
        with backend.transaction() as tx:
            backend.create_schema(tx)
            meta = _read_meta(tx)
            if "store_id" not in meta:
                cls._static_meta(
                    tx,
                    {
                        "schema_version": str(SCHEMA_VERSION),
                        "store_id": os.urandom(16).hex(),
                        "state": "initialising",
                    },
                )
        kek = source.load_or_create(kek_file)
        with backend.transaction() as tx:
            meta = _read_meta(tx)
            keys = _keys(kek, meta, backend.location)
            store = cls(backend, keys)
            if meta.get("state") == "ready":  # another daemon finished first
                if not _same(keys.kek_check(), meta.get("kek_check", "")):
                    raise KeyStoreError(
                        f"key store {backend.location} was just initialised by another daemon "
                        f"under another key-encryption key than {_kek_name(source, kek_file)}: "
                        "give every daemon the same KEK (docs/scaling.md)"
                    )
                return store
            for table in TABLES.values():
                if tx.execute(f"SELECT COUNT(*) FROM {table}")[0][0]:  # noqa: S608
                    raise KeyStoreError(
                        f"key store {backend.location} is half initialised but holds rows: {RECOVERY}"
                    )
            store._write_meta(tx, {"schema_version": str(SCHEMA_VERSION), "kek_check": keys.kek_check()})
            store._write_manifest(tx, 0, {})
            store._write_meta(tx, {"state": "ready"})
        store._manifest = _Manifest(0, _manifest_text({}), {})
        return store

    @staticmethod
    def _static_meta(tx: Tx, values: dict[str, str]) -> None:
        for key, value in values.items():
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO "
                "UPDATE SET value = excluded.value",
                (key, value),
            )

    def _write_meta(self, tx: Tx, values: dict[str, str]) -> None:
        self._static_meta(tx, values)

    def close(self) -> None:
        """Disconnect from the database."""
        self.backend.close()

    def status(self) -> dict[str, Any]:
        """Engine, location, reachability and generation, for ``status``."""
        facts = self.backend.status()
        facts["generation"] = self.generation
        facts["schema"] = SCHEMA_VERSION
        return facts

    # --- the manifest ----------------------------------------------------------------
    def _read_manifest(self, tx: Tx, *, allow_rollback: bool = False) -> _Manifest:
        """The authenticated manifest as the database has it now (parsed again only when
        its text changed). Refuses a generation below one this process had seen before this
        read began (a read that began earlier may return an older one; that is no rollback)."""
        seen = self._seen_generation
        meta = _read_meta(tx)
        text = meta.get("manifest")
        try:
            generation = int(meta["generation"])
            mac = meta["manifest_mac"]
        except (KeyError, ValueError):
            raise KeyStoreError(f"key store {self.location}: the manifest is missing: {RECOVERY}") from None
        cached = self._manifest
        if cached is not None and cached.text == text and cached.generation == generation:
            return cached
        if text is None or not _same(self._keys.manifest_mac(generation, text), mac):
            raise KeyStoreError(f"key store {self.location}: the manifest fails authentication: {RECOVERY}")
        if generation < seen and not allow_rollback:
            raise KeyStoreError(
                f"key store {self.location} went back from generation {seen} to {generation} "
                f"while this daemon was running: the whole store was replaced by an older "
                f"copy. The daemon refuses to use it: {RECOVERY}"
            )
        try:
            entries = _parse_manifest(text)
        except (ValueError, TypeError):
            raise KeyStoreError(f"key store {self.location}: the manifest is malformed: {RECOVERY}") from None
        manifest = _Manifest(generation, text, entries)
        self._remember(manifest)
        return manifest

    def _remember(self, manifest: _Manifest) -> None:
        with self._lock:
            current = self._manifest
            if current is None or manifest.generation >= current.generation:
                self._manifest = manifest
            self._seen_generation = max(self._seen_generation, manifest.generation)

    def _write_manifest(self, tx: Tx, generation: int, entries: dict[Key, _Entry]) -> _Manifest:
        text = _manifest_text(entries)
        self._write_meta(
            tx,
            {
                "generation": str(generation),
                "manifest": text,
                "manifest_mac": self._keys.manifest_mac(generation, text),
            },
        )
        tx.notify(generation)
        return _Manifest(generation, text, {k: e.copy() for k, e in entries.items()})

    def _current(self, *, force: bool = False) -> _Manifest:
        """The manifest, read again if another writer may have changed it. While the
        database is unreachable the last one read is used (keys already known keep
        working); with nothing known, or ``force``, the failure is raised."""
        manifest = self._manifest
        if manifest is not None and not force and not self.backend.changed():
            return manifest
        try:
            with self.backend.snapshot() as tx:
                return self._read_manifest(tx)
        except KeyStoreUnavailable:
            if force or manifest is None:
                raise
            return manifest

    @contextmanager
    def _change(self) -> Iterator[tuple[Tx, dict[Key, _Entry]]]:
        """A write transaction: the manifest is read and checked inside it (after the write
        lock), changed by the caller, and written as the next generation at the end."""
        with self.backend.transaction() as tx:
            manifest = self._read_manifest(tx)
            entries = {k: e.copy() for k, e in manifest.entries.items()}
            yield tx, entries
            written = self._write_manifest(tx, manifest.generation + 1, entries)
        self._remember(written)

    # --- checking rows ---------------------------------------------------------------
    def _row_ok(self, kind: str, row: Row) -> bool:
        key = (kind, str(row[0]), _version_of(kind, row))
        if self._verified.get(key) == row:
            return True
        if not self._keys.check(kind, row[:-1], _mac_of(row)):
            return False
        self._verified[key] = row
        return True

    def _check_rows(
        self, kind: str, name: str, entry: _Entry | None, rows: list[Row] | tuple[Row, ...]
    ) -> None:
        """Raise :class:`KeyStoreError` unless ``rows`` are exactly the rows the manifest
        entry lists, each authentic."""
        problems = self._row_problems(kind, name, entry, rows)
        if problems:
            raise KeyStoreError(
                f"{problems[0]} in key store {self.location}. The daemon refuses to use it: {RECOVERY}"
            )

    def _row_problems(
        self, kind: str, name: str, entry: _Entry | None, rows: list[Row] | tuple[Row, ...]
    ) -> list[Problem]:
        problems = []
        listed = dict(entry.rows) if entry is not None else {}
        for row in rows:
            version = _version_of(kind, row)
            if not self._row_ok(kind, row):
                problems.append(
                    Problem(
                        kind,
                        name,
                        version,
                        "fails authentication (altered outside the daemon, or written under another KEK)",
                    )
                )
                listed.pop(version or 0, None)
                continue
            expected = listed.pop(version or 0, None)
            if expected is None:
                problems.append(
                    Problem(
                        kind, name, version, "is not in the manifest (added or restored outside the daemon)"
                    )
                )
            elif expected != _prefix(_mac_of(row)):
                problems.append(
                    Problem(
                        kind,
                        name,
                        version,
                        "is not the row the manifest "
                        "lists (rolled back to an older copy, or replaced, "
                        "outside the daemon)",
                    )
                )
        for version in sorted(listed):
            newest = entry is not None and version == max(entry.rows)
            problems.append(
                Problem(
                    kind,
                    name,
                    version,
                    "is missing (deleted"
                    + (", or the slot rolled back to an older version," if newest and kind == "key" else "")
                    + " outside the daemon)",
                )
            )
        return problems

    def verify(self) -> list[Problem]:
        """Every row's MAC and the manifest against the rows; [] when the store is intact."""
        try:
            with self.backend.snapshot() as tx:
                manifest = self._read_manifest(tx)
                tables = {kind: tx.execute(_SELECT[kind]) for kind in TABLES}
        except KeyStoreError as exc:
            return [Problem("store", self.location, None, exc.message)]
        problems: list[Problem] = []
        for kind, found in tables.items():
            by_name: dict[str, list[Row]] = {}
            for row in found:
                by_name.setdefault(str(row[0]), []).append(row)
            names = set(by_name) | {n for k, n in manifest.entries if k == kind}
            for name in sorted(names):
                problems += self._row_problems(
                    kind, name, manifest.entries.get((kind, name)), by_name.get(name, [])
                )
        return problems

    # --- key slots ---------------------------------------------------------------------
    def _slot_rows(self, name: str, *, force: bool = False) -> tuple[_Entry | None, tuple[Row, ...]]:
        """The slot's manifest entry and its verified rows (oldest first): from the cache
        while the manifest entry is the one they were checked against; else the rows whose
        MAC prefix the manifest changed (all of them the first time) are read in one
        snapshot with the manifest, and checked."""
        manifest = self._current(force=force)
        entry = manifest.entries.get(("key", name))
        cached = self._slots.get(name)
        if cached is not None and cached[0] == entry:
            return cached
        try:
            with self.backend.snapshot() as tx:
                manifest = self._read_manifest(tx)
                entry = manifest.entries.get(("key", name))
                found = self._fetch_rows(tx, name, entry, cached)
        except KeyStoreUnavailable:
            if cached is None or force:
                raise
            return cached  # older, but checked: what this daemon holds keeps serving
        self._check_rows("key", name, entry, found)
        result = (entry.copy() if entry is not None else None, found)
        self._slots[name] = result
        return result

    def _fetch_rows(
        self, tx: Tx, name: str, entry: _Entry | None, cached: tuple[_Entry | None, tuple[Row, ...]] | None
    ) -> tuple[Row, ...]:
        if cached is None or cached[0] is None or entry is None:
            return tuple(tx.execute(f"{_KEY_SELECT} WHERE name = ? ORDER BY version", (name,)))
        known = {row[1]: row for row in cached[1]}
        stale = sorted(v for v, p in entry.rows.items() if v not in known or _prefix(_mac_of(known[v])) != p)
        if len(stale) > 64:
            return tuple(tx.execute(f"{_KEY_SELECT} WHERE name = ? ORDER BY version", (name,)))
        fresh = (
            {
                row[1]: row
                for row in tx.execute(
                    f"{_KEY_SELECT} WHERE name = ? AND version IN ({', '.join('?' * len(stale))})",
                    (name, *stale),
                )
            }
            if stale
            else {}
        )
        kept = {v: known[v] for v in entry.rows if v not in fresh and v in known and v not in stale}
        return tuple(row for _, row in sorted({**kept, **fresh}.items()))

    def _version_row(self, tx: Tx, name: str, entry: _Entry | None, version: int) -> Row | None:
        """One version's row, checked against the manifest (inside a write)."""
        found = tx.execute(f"{_KEY_SELECT} WHERE name = ? AND version = ?", (name, version))
        listed = (
            _Entry(0, 0, {version: entry.rows[version]})
            if entry is not None and version in entry.rows
            else None
        )
        self._check_rows("key", name, listed, found)
        return found[0] if found else None

    def _record(self, row: Row, primary: int | None) -> SlotRecord:
        try:
            exports = json.loads(row[6]) if row[6] is not None else None
            return SlotRecord(
                row[0],
                row[2],
                row[3],
                tuple(int(c) for c in json.loads(row[4])),
                KeyOperationPermission(row[5]),
                row[1],
                row[9],
                row[10],
                frozenset(int(u) for u in exports) if exports is not None else None,
                state=str(row[11]),
                primary=row[1] == primary,
            )
        except (ValueError, TypeError) as exc:  # authenticated, so only a bug gets here
            raise KeyStoreError(f"key slot {row[0]!r}: malformed row ({exc})") from None

    @staticmethod
    def _primary(found: tuple[Row, ...] | list[Row]) -> int | None:
        active = [row[1] for row in found if row[11] == ACTIVE]
        return max(active) if active else None

    def slot_versions(self, name: str, *, fresh: bool = True) -> SlotVersions:
        """Every version of slot ``name`` (read from the database unless ``fresh`` is False
        and the cached manifest is believed current)."""
        entry, found = self._slot_rows(name, force=fresh)
        primary = self._primary(found)
        return SlotVersions(
            name,
            entry.head if entry else 0,
            entry.min_version if entry else 0,
            tuple(self._record(row, primary) for row in found),
        )

    def slot(self, name: str) -> SlotRecord | None:
        """The primary version's metadata, or None if the slot is empty."""
        return self.slot_versions(name, fresh=False).primary

    def slots(self) -> dict[str, SlotRecord]:
        """The primary version of every occupied slot (for ``status``). While the database
        is unreachable, what this daemon knows."""
        try:
            manifest = self._current()
            names = sorted(n for k, n in manifest.entries if k == "key")
            stale = [n for n in names if self._slots.get(n, (None,))[0] != manifest.entries.get(("key", n))]
            if stale:
                with self.backend.snapshot() as tx:
                    manifest = self._read_manifest(tx)
                    found = tx.execute(f"{_KEY_SELECT} ORDER BY name, version")
                by_name: dict[str, list[Row]] = {}
                for row in found:
                    by_name.setdefault(str(row[0]), []).append(row)
                for n in sorted(set(by_name) | set(names)):
                    entry = manifest.entries.get(("key", n))
                    rows = tuple(by_name.get(n, []))
                    self._check_rows("key", n, entry, rows)
                    self._slots[n] = (entry.copy() if entry else None, rows)
        except KeyStoreUnavailable:
            pass  # what is known
        result = {}
        for n, (_entry, rows) in list(self._slots.items()):
            primary = self._primary(rows)
            if primary is not None:
                row = next(r for r in rows if r[1] == primary)
                result[n] = self._record(row, primary)
        return result

    def _locate(self, name: str, version: int | None) -> tuple[SlotRecord, Row]:
        entry, found = self._slot_rows(name)
        if version is not None and (entry is None or version > entry.head):
            # Perhaps another daemon just made it: read through before refusing.
            entry, found = self._slot_rows(name, force=True)
        primary = self._primary(found)
        if version is None:
            if primary is None:
                extra = (
                    f" (it was cleared; its versions went up to {entry.head})"
                    if entry is not None and entry.head
                    else ""
                )
                raise CryptoError(ErrorCode.SLOT_EMPTY, f"key slot {name!r} is empty{extra}")
            version = primary
        row = next((r for r in found if r[1] == version), None)
        head = entry.head if entry is not None else 0
        if row is None:
            if version < 1 or version > head:
                raise CryptoError(
                    ErrorCode.RESOURCE_NOT_FOUND,
                    f"key slot {name!r} has no version {version} (its newest is {head})"
                    if head
                    else f"key slot {name!r} has no version {version} (it never held a key)",
                )
            raise CryptoError(
                ErrorCode.KEY_VERSION_RETIRED,
                f"version {version} of key slot {name!r} no longer exists: the "
                "slot was cleared after it was made, and its key destroyed",
            )
        record = self._record(row, primary)
        if record.state == RETIRED:
            raise CryptoError(
                ErrorCode.KEY_VERSION_RETIRED,
                f"version {version} of key slot {name!r} was retired at "
                f"{_when(record.updated)} and its key destroyed; data protected "
                "under it can no longer be decrypted or verified here",
            )
        minimum = entry.min_version if entry is not None else 0
        if version < minimum:
            raise CryptoError(
                ErrorCode.KEY_VERSION_RETIRED,
                f"version {version} of key slot {name!r} is below the slot's "
                f"minimum version {minimum} (set_minimum_version): it may not be "
                "used until the minimum is lowered",
            )
        return record, row

    def resolve(self, name: str, version: int | None = None) -> SlotRecord:
        """The metadata of the version :meth:`load_key` would return (same errors), without
        unwrapping anything."""
        return self._locate(name, version)[0]

    def load_key(self, name: str, version: int | None = None) -> tuple[SlotRecord, StoredKey]:
        """Metadata and unwrapped :class:`StoredKey` of the primary version of slot
        ``name``, or of ``version``.

        SLOT_EMPTY when the slot holds no version; RESOURCE_NOT_FOUND for a version it never
        had; KEY_VERSION_RETIRED for a version that was retired, removed by a clear, or is
        below the slot's minimum version.
        """
        record, row = self._locate(name, version)
        secret, blob = bool(row[7]), bytes(row[8])
        if secret:
            try:
                blob = self._keys.unwrap(row, blob)
            except InvalidTag:
                raise KeyStoreError(
                    f"key slot {name!r} v{record.version} does not unwrap under "
                    f"this key store's KEK (tampered): {RECOVERY}"
                ) from None
        return record, StoredKey(blob, secret)

    def store_key(
        self,
        name: str,
        algorithm: str,
        provider: int,
        compatible: tuple[int, ...],
        permissions: KeyOperationPermission,
        stored: StoredKey,
        export_uids: frozenset[int] | None = None,
        *,
        if_empty: bool = False,
    ) -> int:
        """Add a version to slot ``name`` and make it the primary; returns its number (one
        past the highest the slot ever had). Older versions stay as they are. With
        ``if_empty`` (provisioning, which several daemons may attempt at once) nothing is
        added to a slot that holds a version, and 0 is returned."""
        now = time.time()
        with self._change() as (tx, entries):
            before = entries.get(("key", name))
            if if_empty and before is not None and before.rows:
                return 0
            entry = before.copy() if before is not None else _Entry()
            version = entry.head + 1
            if tx.execute("SELECT version FROM key_slots WHERE name = ? AND version = ?", (name, version)):
                raise KeyStoreError(
                    f"{Problem('key', name, version, 'is not in the manifest')}"
                    f" in key store {self.location} (added outside the daemon): "
                    f"{RECOVERY}"
                )
            exports = None if export_uids is None else json.dumps(sorted(export_uids))
            meta = (
                name,
                version,
                algorithm,
                provider,
                json.dumps(list(compatible)),
                int(permissions),
                exports,
                int(stored.secret),
            )
            blob = stored.blob
            if stored.secret:
                blob = self._keys.wrap(meta, stored.blob, os.urandom(12))
            row = (*meta, blob, now, now, ACTIVE)
            mac = self._keys.mac("key", row)
            tx.execute(
                f"INSERT INTO key_slots ({', '.join(KEY_COLUMNS)}, mac) VALUES "
                f"({', '.join('?' * (len(row) + 1))})",
                (*row, mac),
            )
            entry.head = version
            entry.rows[version] = _prefix(mac)
            entries[("key", name)] = entry
            cached = self._slots.get(name)
            if cached is not None and cached[0] == before:
                self._slots[name] = (entry.copy(), (*cached[1], (*row, mac)))
            # Otherwise another daemon wrote since this one last read the slot: the cached
            # rows stay (older, but checked; a new version takes nothing from the old ones)
            # and the next use reads what changed. Dropping them would leave nothing to serve
            # if the database went away before that read.
        return version

    def retire_version(self, name: str, version: int) -> list[tuple[int, StoredKey]]:
        """Retire one version: its material is removed from the store; returns (provider,
        reference) of each provider-held key it had (one, or the parts of a split version;
        none for wrapped material), for the caller to destroy once unused. The primary
        version cannot be retired (persist a new one first, or clear the slot). Retiring a
        retired version does nothing and returns nothing."""
        with self._change() as (tx, entries):
            entry = entries.get(("key", name))
            row = self._version_row(tx, name, entry, version)
            if row is None or entry is None:
                head = entry.head if entry is not None else 0
                raise CryptoError(
                    ErrorCode.RESOURCE_NOT_FOUND,
                    f"key slot {name!r} has no version {version}"
                    + (f" (it was removed; the newest is {head})" if 0 < version <= head else ""),
                )
            if row[11] == RETIRED:
                self._slots.pop(name, None)
                return []
            held = self._held(row)
            if version == max(entry.rows):  # the newest is always active: the primary
                raise CryptoError(
                    ErrorCode.INVALID_STATE,
                    f"version {version} is the primary version of key slot "
                    f"{name!r}: persist a new version first, or clear the slot",
                )
            new = (*row[:8], b"", row[9], time.time(), RETIRED)
            mac = self._keys.mac("key", new)
            tx.execute(
                "UPDATE key_slots SET blob = ?, updated = ?, state = ?, mac = ? "
                "WHERE name = ? AND version = ?",
                (b"", new[10], RETIRED, mac, name, version),
            )
            entry.rows[version] = _prefix(mac)
            self._slots.pop(name, None)
        return held

    def set_minimum_version(self, name: str, minimum: int) -> None:
        """Disable the versions below ``minimum`` (0 or 1: none); at most the primary."""
        with self._change() as (_tx, entries):
            entry = entries.get(("key", name))
            if entry is None or not entry.rows:
                raise CryptoError(ErrorCode.SLOT_EMPTY, f"key slot {name!r} is empty")
            primary = max(entry.rows)  # the newest is always active
            if not 0 <= minimum <= primary:
                raise CryptoError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"the minimum version of key slot {name!r} must be 0 to "
                    f"{primary} (its primary version), not {minimum}",
                )
            entry.min_version = minimum
            self._slots.pop(name, None)

    def clear_slot(self, name: str) -> list[tuple[int, StoredKey]]:
        """Remove every version of slot ``name``; returns (provider, reference) of each
        provider-held key (for the caller to destroy once unused). Version numbers are not
        reused."""
        with self._change() as (tx, entries):
            entry = entries.get(("key", name))
            found = tx.execute(f"{_KEY_SELECT} WHERE name = ? ORDER BY version", (name,))
            self._check_rows("key", name, entry, found)
            held = [ref for row in found for ref in self._held(row)]
            tx.execute("DELETE FROM key_slots WHERE name = ?", (name,))
            if entry is not None:
                entry.rows.clear()
                entry.min_version = 0
            self._slots.pop(name, None)
        return held

    def references(self, provider: int) -> list[StoredKey]:
        """Every provider-held key (a backend reference) of ``provider``'s slots, parts of
        split versions included."""
        with self.backend.snapshot() as tx:
            found = tx.execute(
                "SELECT blob FROM key_slots WHERE provider = ? AND secret = 0 AND state = ?",
                (provider, ACTIVE),
            )
            split = tx.execute(f"{_KEY_SELECT} WHERE provider = ? AND state = ?", (SPLIT_PROVIDER, ACTIVE))
        parts = [ref for row in split for pid, ref in self._held(row) if pid == provider]
        return [StoredKey(bytes(row[0]), False) for row in found] + parts

    def _held(self, row: Row) -> list[tuple[int, StoredKey]]:
        """(provider, reference) of each provider-held key of an active key row: its blob,
        or the references among a split version's parts (:mod:`.parts`)."""
        if row[11] != ACTIVE:
            return []
        if int(row[3]) == SPLIT_PROVIDER:
            where = f"key slot {row[0]!r} v{row[1]}"
            try:
                blob = self._keys.unwrap(row, bytes(row[8]))
            except InvalidTag:
                raise KeyStoreError(
                    f"{where} does not unwrap under this key store's KEK (tampered): {RECOVERY}"
                ) from None
            return [
                (part.provider, part.stored) for part in decode_parts(blob, where) if not part.stored.secret
            ]
        return [] if row[7] else [(int(row[3]), StoredKey(bytes(row[8]), False))]

    def slot_names(self) -> list[str]:
        """Names of all occupied slots."""
        with self.backend.snapshot() as tx:
            return [str(r[0]) for r in tx.execute("SELECT DISTINCT name FROM key_slots ORDER BY name")]

    # --- certificates and trust stores ----------------------------------------------
    def _single(self, kind: str, name: str) -> Row | None:
        with self.backend.snapshot() as tx:
            manifest = self._read_manifest(tx)
            found = tx.execute(f"{_SELECT[kind]} WHERE name = ?", (name,))
        self._check_rows(kind, name, manifest.entries.get((kind, name)), found)
        return found[0] if found else None

    def _replace(self, kind: str, name: str, make: Any) -> int:
        with self._change() as (tx, entries):
            entry = entries.get((kind, name))
            found = tx.execute(f"{_SELECT[kind]} WHERE name = ?", (name,))
            self._check_rows(kind, name, entry, found)
            version = (entry.head if entry else 0) + 1
            row = make(version)
            mac = self._keys.mac(kind, row)
            columns = COLUMNS[kind]
            tx.execute(f"DELETE FROM {TABLES[kind]} WHERE name = ?", (name,))  # noqa: S608
            tx.execute(
                f"INSERT INTO {TABLES[kind]} ({', '.join(columns)}, mac) VALUES "  # noqa: S608
                f"({', '.join('?' * (len(row) + 1))})",
                (*row, mac),
            )
            entries[(kind, name)] = _Entry(version, 0, {version: _prefix(mac)})
        return version

    def certificate(self, name: str) -> bytes | None:
        """DER of a stored certificate slot."""
        row = self._single("cert", name)
        return bytes(row[1]) if row else None

    def store_certificate(self, name: str, der: bytes) -> int:
        """Atomically replace a certificate slot; returns the new version."""
        return self._replace("cert", name, lambda v: (name, bytes(der), v, time.time()))

    def trust_store(self, name: str) -> tuple[list[bytes], list[bytes]] | None:
        """(anchor DERs, CRL DERs) of a stored trust store."""
        row = self._single("trust", name)
        if row is None:
            return None
        try:
            return (
                [bytes.fromhex(h) for h in json.loads(row[1])],
                [bytes.fromhex(h) for h in json.loads(row[2])],
            )
        except (ValueError, TypeError) as exc:  # authenticated, so only a bug gets here
            raise KeyStoreError(f"trust store {name!r}: malformed row ({exc})") from None

    def store_trust_store(self, name: str, anchors: list[bytes], crls: list[bytes]) -> int:
        """Atomically replace a trust store; returns the new version."""
        return self._replace(
            "trust",
            name,
            lambda v: (
                name,
                json.dumps([a.hex() for a in anchors]),
                json.dumps([c.hex() for c in crls]),
                v,
                time.time(),
            ),
        )

    # --- recovery ------------------------------------------------------------------------
    def repair(self) -> list[Problem]:
        """Drop every row that fails authentication and every row that is not the one the
        manifest lists (stale copies); re-seal the manifest over the rest. Returns what was
        dropped: those keys are lost. With a damaged manifest, every row whose own MAC holds
        is kept."""
        dropped: list[Problem] = []
        with self.backend.transaction() as tx:
            try:
                manifest: _Manifest | None = self._read_manifest(tx, allow_rollback=True)
            except KeyStoreError:
                manifest = None
            old = manifest.entries if manifest is not None else {}
            entries: dict[Key, _Entry] = {}
            for kind, table in TABLES.items():
                for row in tx.execute(_SELECT[kind]):
                    name, version, mac = str(row[0]), _version_of(kind, row), _mac_of(row)
                    listed = old.get((kind, name))
                    why = None
                    if not self._keys.check(kind, row[:-1], mac):
                        why = "fails authentication"
                    elif manifest is not None and (
                        listed is None or listed.rows.get(version or 0) != _prefix(mac)
                    ):
                        why = "is not the row the manifest lists"
                    if why is None:
                        entry = entries.setdefault(
                            (kind, name),
                            _Entry(listed.head if listed else 0, listed.min_version if listed else 0),
                        )
                        entry.rows[int(version or 0)] = _prefix(mac)
                        entry.head = max(entry.head, int(version or 0))
                        continue
                    dropped.append(Problem(kind, name, version, why))
                    tx.execute(
                        f"DELETE FROM {table} WHERE name = ? AND version = ?",  # noqa: S608
                        (name, version),
                    )
            for (kind, name), listed in old.items():
                entry = entries.setdefault((kind, name), _Entry(listed.head, 0))
                for version in sorted(set(listed.rows) - set(entry.rows)):
                    dropped.append(Problem(kind, name, version, "was missing; forgotten"))
                if kind == "key" and entry.rows and listed.min_version <= max(entry.rows):
                    entry.min_version = listed.min_version
            generation = (
                manifest.generation
                if manifest is not None
                else int(_read_meta(tx).get("generation", "0") or 0)
            )
            written = self._write_manifest(tx, generation + 1, entries)
        with self._lock:
            self._manifest = written
            self._seen_generation = written.generation
        self._slots.clear()
        return dropped


# --- helpers --------------------------------------------------------------------------------
def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _keys(kek: bytes, meta: dict[str, str], where: str) -> StoreKeys:
    try:
        return StoreKeys(kek, bytes.fromhex(meta["store_id"]))
    except (KeyError, ValueError):
        raise KeyStoreError(f"key store {where} has a malformed store id: {RECOVERY}") from None


def _kek_name(source: KekSource, kek_file: Path) -> str:
    describe = getattr(source, "describe", None)
    return str(describe(kek_file)) if callable(describe) else str(kek_file)


def _default_kek(location: Path | str) -> Path:
    if isinstance(location, Path):
        return default_kek_path(location)
    raise KeyStoreError(
        f"key store {location}: a shared store needs [daemon] kek_file or kek_provider (docs/scaling.md)"
    )


def _read_meta(tx: Tx) -> dict[str, str]:
    return {str(k): str(v) for k, v in tx.execute("SELECT key, value FROM meta")}


def _layout(backend: Backend) -> tuple[str, dict[str, str]]:
    """("empty" | "initialising" | "v1" | "v2" | "v3" | "newer" | "damaged", meta)."""
    tables = backend.tables()
    meta: dict[str, str] = {}
    if "meta" in tables:
        try:
            with backend.snapshot() as tx:
                meta = _read_meta(tx)
        except KeyStoreError:
            meta = {}
    if not tables.keys() & set(TABLES.values()):
        return ("initialising" if meta.get("state") == "initialising" else "empty"), meta
    columns = tables.get("key_slots", set())
    version = meta.get("schema_version")
    if version is None:
        return ("v1" if "mac" not in columns and "secret" in columns else "damaged"), meta
    if not version.isdigit():
        return "damaged", meta
    number = int(version)
    if number > SCHEMA_VERSION:
        return "newer", meta
    if meta.get("state") == "initialising" and "kek_check" not in meta:
        return "initialising", meta
    if number == SCHEMA_VERSION and {"mac", "state"} <= columns:
        return "v3", meta
    if number == 2 and "mac" in columns and "state" not in columns:
        return "v2", meta
    return "damaged", meta


__all__ = [
    "ACTIVE",
    "RETIRED",
    "SCHEMA_VERSION",
    "CERT_COLUMNS",
    "KEY_COLUMNS",
    "TRUST_COLUMNS",
    "KeyStore",
    "SlotRecord",
    "SlotVersions",
    "open_backend",
]
