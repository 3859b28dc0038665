"""The persistent key store: key slots, certificate slots and trust stores in SQLite.

Durability: WAL journal with ``synchronous=FULL``, one transaction per change, so once a
write returns it survives ``kill -9``, and a crash mid-write leaves the previous content.

Authenticity (schema 2): whoever can write the database file but not read the
key-encryption key (KEK) must not be able to change what a key may do, plant a key, or make
the daemon lose keys silently. So, under two keys derived from the KEK and the store's random
id (HKDF-SHA-256):

- every row carries an HMAC-SHA-256 over all its columns (names, versions, algorithm,
  provider, compatible providers, permissions, export allow-list, secret flag, material,
  times; certificate DER; trust-store anchors and CRLs);
- secret material is wrapped with AES-256-GCM whose associated data is the row's metadata,
  so a blob moved to another row, or under changed metadata, does not unwrap;
- an authenticated manifest (the ``meta`` table) lists every row (kind, name, version, MAC)
  and a generation counter: rows that disappear, reappear or roll back are detected;
- a check value proves the KEK belongs to this store.

:meth:`KeyStore.open` verifies all of it and refuses to open — never re-creating a KEK or an
empty store behind an existing one — with a :class:`KeyStoreError` naming the problem and the
recovery command (``cryptostack keystore verify|migrate|repair|reset``, see docs/security.md).
Replaying a whole older copy of both the database and its manifest is not detectable without
state outside the store; the threat model says so.

Providers that keep their own keys (HSM, TPM) store only a reference here (``secret`` 0),
authenticated the same way. Schema 2 keys rows by (name, version) so that several versions
of a slot can coexist (key rotation); today a new version replaces the previous ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptostack_core.sdk.provider import KekSource, StoredKey
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission

KEK_SIZE = 32
SCHEMA_VERSION = 2
RECOVERY = ("see docs/security.md, 'Key store recovery': `cryptostack keystore verify --config "
            "FILE` explains; restore the store and its KEK from a backup, or `cryptostack "
            "keystore repair --config FILE` (drops what fails authentication: those keys are "
            "lost) or `cryptostack keystore reset --config FILE` (sets both aside, starts empty)")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_slots (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    provider INTEGER NOT NULL,
    compatible TEXT NOT NULL,
    permissions INTEGER NOT NULL,
    export_uids TEXT,
    secret INTEGER NOT NULL,
    blob BLOB NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    mac BLOB NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS cert_slots (
    name TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL,
    mac BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS trust_stores (
    name TEXT PRIMARY KEY,
    anchors TEXT NOT NULL,
    crls TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated REAL NOT NULL,
    mac BLOB NOT NULL
);
"""
_KEY_COLUMNS = ("name, version, algorithm, provider, compatible, permissions, export_uids, "
                "secret, blob, created, updated")
_CERT_COLUMNS = "name, der, version, updated"
_TRUST_COLUMNS = "name, anchors, crls, version, updated"
# kind -> (table, columns MACed in this order)
_KINDS = {"key": ("key_slots", _KEY_COLUMNS), "cert": ("cert_slots", _CERT_COLUMNS),
          "trust": ("trust_stores", _TRUST_COLUMNS)}


class KeyStoreError(CryptoError):
    """The key store cannot be opened or used as it is (tampered, incomplete, wrong KEK,
    older schema). The message says what and how to recover."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, message)


class FileKekSource(KekSource):
    """The default KEK: 32 random bytes in a 0600 file beside the key store."""

    def load_or_create(self, path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read(path)
        try:
            os.write(fd, os.urandom(KEK_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> bytes:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CryptoError(ErrorCode.ACCESS_DENIED,
                              f"key-encryption key {path} is readable by group or others; "
                              "chmod 600 it")
        data = path.read_bytes()
        if len(data) != KEK_SIZE:
            raise CryptoError(ErrorCode.INTERNAL_ERROR,
                              f"key-encryption key {path} is {len(data)} bytes, expected 32")
        return data


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SlotRecord:
    """A stored key slot row (material still wrapped)."""

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


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`KeyStore.verify`."""

    kind: str  # "key", "cert", "trust", "store"
    name: str
    version: int | None
    what: str

    def __str__(self) -> str:
        label = {"key": "key slot", "cert": "certificate slot", "trust": "trust store",
                 "store": "store"}[self.kind]
        version = f" v{self.version}" if self.version is not None else ""
        return f"{label} {self.name!r}{version}: {self.what}"


def _encode(*values: Any) -> bytes:
    return cbor2.dumps(list(values), canonical=True)


class _Keys:
    """The store's working keys, derived from the KEK and the store id."""

    def __init__(self, kek: bytes, store_id: bytes) -> None:
        if len(kek) != KEK_SIZE:
            raise ValueError("KEK must be 32 bytes")

        def derive(purpose: bytes) -> bytes:
            return HKDF(hashes.SHA256(), 32, store_id,
                        b"cryptostack key store v2 " + purpose).derive(kek)

        self.wrap = AESGCM(derive(b"wrap"))
        self.mac_key = derive(b"mac")
        self.store_id = store_id

    def mac(self, kind: str, row: tuple[Any, ...]) -> bytes:
        return hmac.new(self.mac_key, _encode("cryptostack-keystore/2", kind, self.store_id,
                                              *row), hashlib.sha256).digest()

    def aad(self, row: tuple[Any, ...]) -> bytes:
        # A key row without blob and without times: what the material may be used as.
        return _encode("cryptostack-slot/2", self.store_id, *row[:8])

    def kek_check(self) -> str:
        return hmac.new(self.mac_key, b"kek-check" + self.store_id, hashlib.sha256).hexdigest()

    def manifest_mac(self, generation: int, entries: str) -> str:
        return hmac.new(self.mac_key, _encode("cryptostack-manifest/2", self.store_id,
                                              generation, entries), hashlib.sha256).hexdigest()


Entry = tuple[str, str, int]  # kind, name, version


class KeyStore:
    """SQLite-backed store; thread-safe (one connection behind a lock).

    Use :meth:`open` (it verifies the whole store); the constructor is internal.
    """

    def __init__(self, path: Path | None, db: sqlite3.Connection, keys: _Keys) -> None:
        self.path = path
        self._db = db
        self._keys = keys
        self._lock = threading.Lock()
        self._manifest_text: str | None = None
        self._manifest: dict[tuple[str, str], tuple[int, str]] = {}
        # Rows whose MAC was checked, byte for byte: reading one again needs no HMAC.
        self._verified: dict[tuple[str, str], tuple[Any, ...]] = {}

    # --- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | None, kek_source: KekSource | None = None,
             kek_path: Path | None = None) -> KeyStore:
        """Open (creating on first start) the store and its KEK, after verifying both.

        Raises :class:`KeyStoreError` for a store that fails authentication, lost rows, a KEK
        that is missing or belongs to another store, a store missing or emptied beside an
        existing KEK, and a schema-1 store (``cryptostack keystore migrate`` converts it).
        """
        if path is None:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.executescript(_SCHEMA)
            store = cls(None, db, _Keys(os.urandom(KEK_SIZE), os.urandom(16)))
            store._initialise()
            return store
        source = kek_source or FileKekSource()
        kek_file = kek_path or default_kek_path(path)
        db = _connect(path)
        try:
            store = cls._open_checked(path, db, source, kek_file)
        except BaseException:
            db.close()
            raise
        problems = store.verify()
        if problems:
            store.close()
            listed = "; ".join(str(p) for p in problems[:8])
            more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
            raise KeyStoreError(f"key store {path} failed authentication: {listed}{more}. "
                                f"The daemon will not start on it: {RECOVERY}")
        return store

    @classmethod
    def open_unverified(cls, path: Path, kek_source: KekSource | None = None,
                        kek_path: Path | None = None) -> KeyStore:
        """Open an existing store after the KEK checks only (for ``verify`` and ``repair``);
        never creates one."""
        if not path.exists():
            raise KeyStoreError(f"there is no key store at {path}")
        db = _connect(path)
        try:
            return cls._open_checked(path, db, kek_source or FileKekSource(),
                                     kek_path or default_kek_path(path), create=False)
        except BaseException:
            db.close()
            raise

    @classmethod
    def _open_checked(cls, path: Path, db: sqlite3.Connection, source: KekSource,
                      kek_file: Path, create: bool = True) -> KeyStore:
        layout = _layout(db, path)
        kek_exists = source.exists(kek_file)
        if layout == "v1":
            raise KeyStoreError(
                f"key store {path} has schema 1 (cryptostack 0.1), whose metadata is not "
                f"authenticated. Run `cryptostack keystore migrate --config FILE` to convert it "
                f"(it keeps a backup and every key; review the slots it lists)")
        if layout == "unknown-newer":
            raise KeyStoreError(f"key store {path} was written by a newer cryptostack "
                                "(schema above 2); upgrade this daemon")
        meta = _meta(db)
        if layout == "empty" or (layout == "v2" and meta.get("state") == "initialising"):
            if layout == "empty" and kek_exists:
                raise KeyStoreError(
                    f"key store {path} is missing or empty, but its key-encryption key "
                    f"{kek_file} exists: the store was deleted, emptied or moved, and its "
                    f"keys would be replaced by new ones. The daemon will not start: {RECOVERY}")
            if not create:
                raise KeyStoreError(f"key store {path} is empty (never initialised)")
            return cls._create(path, db, source, kek_file, meta)
        if layout != "v2" or "store_id" not in meta or "kek_check" not in meta:
            raise KeyStoreError(f"key store {path} has lost its metadata (the meta table was "
                                f"emptied or altered). The daemon will not start: {RECOVERY}")
        if not kek_exists:
            raise KeyStoreError(
                f"the key-encryption key {kek_file} of key store {path} is missing; a new one "
                f"would make every stored key unusable, so none is created. Restore it from a "
                f"backup; if it is lost, so are the keys: {RECOVERY}")
        kek = source.load_or_create(kek_file)
        try:
            keys = _Keys(kek, bytes.fromhex(meta["store_id"]))
        except ValueError:
            raise KeyStoreError(f"key store {path} has a malformed store id: {RECOVERY}") from None
        if not hmac.compare_digest(keys.kek_check(), meta["kek_check"]):
            raise KeyStoreError(
                f"the key-encryption key {kek_file} does not belong to key store {path} "
                f"(replaced, or the store was copied from elsewhere): {RECOVERY}")
        return cls(path, db, keys)

    @classmethod
    def _create(cls, path: Path, db: sqlite3.Connection, source: KekSource, kek_file: Path,
                meta: dict[str, str]) -> KeyStore:
        # Order matters for crash safety: the store says "initialising" before a KEK exists,
        # so a KEK beside an empty store is never ours to reuse unless the store says so.
        db.executescript(_SCHEMA)
        store_id = meta.get("store_id") or os.urandom(16).hex()
        with _transaction(db):
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('store_id', ?)", (store_id,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('state', 'initialising')")
        kek = source.load_or_create(kek_file)
        store = cls(path, db, _Keys(kek, bytes.fromhex(store_id)))
        for table, _ in _KINDS.values():
            if db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:  # noqa: S608
                raise KeyStoreError(f"key store {path} is half initialised but holds rows: "
                                    f"{RECOVERY}")
        store._initialise()
        return store

    def _initialise(self) -> None:
        with _transaction(self._db):
            db = self._db
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('store_id', ?)",
                       (self._keys.store_id.hex(),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('kek_check', ?)",
                       (self._keys.kek_check(),))
            self._write_manifest(0, {})
            db.execute("INSERT OR REPLACE INTO meta VALUES ('state', 'ready')")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # --- verification ------------------------------------------------------------------
    def verify(self) -> list[Problem]:
        """Every row's MAC and the manifest against the rows; [] when the store is intact."""
        problems: list[Problem] = []
        with self._lock:
            try:
                manifest = self._load_manifest()
            except KeyStoreError as exc:
                return [Problem("store", str(self.path), None, exc.message)]
            seen: set[tuple[str, str]] = set()
            for kind, (table, columns) in _KINDS.items():
                for row in self._db.execute(f"SELECT {columns}, mac FROM {table}"):  # noqa: S608
                    name = str(row[0])
                    version = _version(kind, row)
                    if not hmac.compare_digest(self._keys.mac(kind, tuple(row[:-1])),
                                               _mac_of(row)):
                        problems.append(Problem(kind, name, version,
                                                "fails authentication (altered outside the "
                                                "daemon, or written under another KEK)"))
                        seen.add((kind, name))
                        continue
                    expected = manifest.get((kind, name))
                    if expected is None:
                        problems.append(Problem(kind, name, version,
                                                "is not in the manifest (added or restored "
                                                "outside the daemon)"))
                    elif expected[0] != version:
                        problems.append(Problem(kind, name, version,
                                                f"is version {version}, the manifest says "
                                                f"{expected[0]} (rolled back)"))
                    seen.add((kind, name))
            for (kind, name), (version, _) in manifest.items():
                if (kind, name) not in seen:
                    problems.append(Problem(kind, name, version,
                                            "is missing (deleted outside the daemon)"))
        return problems

    def _load_manifest(self) -> dict[tuple[str, str], tuple[int, str]]:
        """The authenticated list of rows; cached while the stored text does not change."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
        text = str(row[0]) if row else ""
        if text == self._manifest_text:
            return self._manifest
        meta = _meta(self._db)
        try:
            generation = int(meta["generation"])
            mac = meta["manifest_mac"]
        except (KeyError, ValueError):
            raise KeyStoreError(f"key store {self.path}: the manifest is missing") from None
        if not hmac.compare_digest(self._keys.manifest_mac(generation, text), mac):
            raise KeyStoreError(f"key store {self.path}: the manifest fails authentication")
        try:
            entries = {(str(k), str(n)): (int(v), str(m)) for k, n, v, m in json.loads(text)}
        except (ValueError, TypeError):
            raise KeyStoreError(f"key store {self.path}: the manifest is malformed") from None
        self._manifest_text, self._manifest = text, entries
        return entries

    def _write_manifest(self, generation: int,
                        entries: dict[tuple[str, str], tuple[int, str]]) -> None:
        text = json.dumps(sorted([k, n, v, m] for (k, n), (v, m) in entries.items()))
        for key, value in (("generation", str(generation)), ("manifest", text),
                           ("manifest_mac", self._keys.manifest_mac(generation, text))):
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        self._manifest_text, self._manifest = text, dict(entries)

    @contextmanager
    def _change(self) -> Iterator[dict[tuple[str, str], tuple[int, str]]]:
        """A write transaction; the manifest is checked first and rewritten at the end."""
        with self._lock, _transaction(self._db):
            self._manifest_text = None  # re-read inside the transaction
            entries = dict(self._load_manifest())
            generation = int(_meta(self._db)["generation"])
            yield entries
            self._write_manifest(generation + 1, entries)

    def _checked_row(self, kind: str, name: str, row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """``row`` (columns then mac) if it authenticates and matches the manifest."""
        expected = self._load_manifest().get((kind, name))
        if row is None:
            if expected is not None:
                raise KeyStoreError(f"{Problem(kind, name, expected[0], 'is missing')} in key "
                                    f"store {self.path} (deleted outside the daemon)")
            return None
        row = tuple(row)
        mac = _mac_of(row)
        if expected is None or not hmac.compare_digest(expected[1], mac.hex()) or (
                self._verified.get((kind, name)) != row  # not this very row checked before
                and not hmac.compare_digest(self._keys.mac(kind, row[:-1]), mac)):
            raise KeyStoreError(f"{Problem(kind, name, None, 'fails authentication')} in key "
                                f"store {self.path} (altered outside the daemon)")
        self._verified[(kind, name)] = row
        return row

    # --- key slots -------------------------------------------------------------------
    def _key_row(self, name: str) -> tuple[Any, ...] | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_KEY_COLUMNS}, mac FROM key_slots WHERE name = ? "  # noqa: S608
                "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
            return self._checked_row("key", name, row)

    @staticmethod
    def _record(row: tuple[Any, ...]) -> SlotRecord:
        try:
            exports = json.loads(row[6]) if row[6] is not None else None
            return SlotRecord(row[0], row[2], row[3], tuple(int(c) for c in json.loads(row[4])),
                              KeyOperationPermission(row[5]), row[1], row[9], row[10],
                              frozenset(int(u) for u in exports) if exports is not None else None)
        except (ValueError, TypeError) as exc:  # authenticated, so only a bug gets here
            raise KeyStoreError(f"key slot {row[0]!r}: malformed row ({exc})") from None

    def slot(self, name: str) -> SlotRecord | None:
        """Metadata of a stored slot, or None if the slot is empty."""
        row = self._key_row(name)
        return None if row is None else self._record(row)

    def slots(self) -> dict[str, SlotRecord]:
        """Metadata of every occupied slot, read and checked at once (for ``status``)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_KEY_COLUMNS}, mac FROM key_slots "  # noqa: S608
                                    "ORDER BY name, version").fetchall()
            latest = {row[0]: row for row in rows}  # the highest version of each name wins
            manifest = self._load_manifest()
            for kind, name in manifest:
                if kind == "key" and name not in latest:
                    self._checked_row("key", name, None)  # raises: deleted outside
            return {name: self._record(self._checked_row("key", name, row) or row)
                    for name, row in latest.items()}

    def load_key(self, name: str) -> tuple[SlotRecord, StoredKey]:
        """Metadata and unwrapped :class:`StoredKey` of a slot; SLOT_EMPTY if none."""
        row = self._key_row(name)
        if row is None:
            raise CryptoError(ErrorCode.SLOT_EMPTY, f"key slot {name!r} is empty")
        record = self._record(row)
        secret, blob = bool(row[7]), bytes(row[8])
        if secret:
            try:
                blob = self._keys.wrap.decrypt(blob[:12], blob[12:], self._keys.aad(row))
            except Exception:
                raise KeyStoreError(f"key slot {name!r} does not unwrap under this key store's "
                                    "KEK (tampered)") from None
        return record, StoredKey(blob, secret)

    def store_key(self, name: str, algorithm: str, provider: int, compatible: tuple[int, ...],
                  permissions: KeyOperationPermission, stored: StoredKey,
                  export_uids: frozenset[int] | None = None) -> tuple[int, StoredKey | None]:
        """Atomically replace slot ``name``. Returns the new version and the previous
        :class:`StoredKey` (so its provider can destroy a durable copy), if any."""
        now = time.time()
        with self._change() as entries:
            db = self._db
            current = db.execute(
                f"SELECT {_KEY_COLUMNS}, mac FROM key_slots WHERE name = ? "  # noqa: S608
                "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
            current = self._checked_row("key", name, current)
            version = current[1] + 1 if current else 1
            created = current[9] if current else now
            previous = StoredKey(bytes(current[8]), False) if current and not current[7] else None
            exports = None if export_uids is None else json.dumps(sorted(export_uids))
            meta = (name, version, algorithm, provider, json.dumps(list(compatible)),
                    int(permissions), exports, int(stored.secret))
            blob = stored.blob
            if stored.secret:
                nonce = os.urandom(12)
                blob = nonce + self._keys.wrap.encrypt(nonce, stored.blob, self._keys.aad(meta))
            row = (*meta, blob, created, now)
            mac = self._keys.mac("key", row)
            db.execute("DELETE FROM key_slots WHERE name = ?", (name,))
            db.execute(f"INSERT INTO key_slots ({_KEY_COLUMNS}, mac) "  # noqa: S608
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, mac))
            entries[("key", name)] = (version, mac.hex())
        return version, previous

    def clear_slot(self, name: str) -> StoredKey | None:
        """Empty a slot; returns the removed reference (non-secret) for provider cleanup."""
        with self._change() as entries:
            row = self._db.execute(
                f"SELECT {_KEY_COLUMNS}, mac FROM key_slots WHERE name = ? "  # noqa: S608
                "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
            row = self._checked_row("key", name, row)
            self._db.execute("DELETE FROM key_slots WHERE name = ?", (name,))
            entries.pop(("key", name), None)
        if row is not None and not row[7]:
            return StoredKey(bytes(row[8]), False)
        return None

    def references(self, provider: int) -> list[StoredKey]:
        """Every non-secret stored key (a backend reference) of ``provider``'s slots."""
        with self._lock:
            rows = self._db.execute("SELECT blob FROM key_slots WHERE provider = ? AND "
                                    "secret = 0", (provider,)).fetchall()
        return [StoredKey(bytes(row[0]), False) for row in rows]

    def slot_names(self) -> list[str]:
        """Names of all stored (occupied) slots."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT name FROM key_slots ORDER BY name")]

    # --- certificates and trust stores ----------------------------------------------
    def certificate(self, name: str) -> bytes | None:
        """DER of a stored certificate slot."""
        with self._lock:
            row = self._db.execute(f"SELECT {_CERT_COLUMNS}, mac FROM cert_slots "  # noqa: S608
                                   "WHERE name = ?", (name,)).fetchone()
            row = self._checked_row("cert", name, row)
        return bytes(row[1]) if row else None

    def store_certificate(self, name: str, der: bytes) -> int:
        """Atomically replace a certificate slot; returns the new version."""
        with self._change() as entries:
            current = self._db.execute(f"SELECT {_CERT_COLUMNS}, mac FROM cert_slots "  # noqa: S608
                                       "WHERE name = ?", (name,)).fetchone()
            current = self._checked_row("cert", name, current)
            version = current[2] + 1 if current else 1
            row = (name, bytes(der), version, time.time())
            mac = self._keys.mac("cert", row)
            self._db.execute("INSERT OR REPLACE INTO cert_slots (name, der, version, updated, mac)"
                             " VALUES (?, ?, ?, ?, ?)", (*row, mac))
            entries[("cert", name)] = (version, mac.hex())
        return version

    def trust_store(self, name: str) -> tuple[list[bytes], list[bytes]] | None:
        """(anchor DERs, CRL DERs) of a stored trust store."""
        with self._lock:
            row = self._db.execute(f"SELECT {_TRUST_COLUMNS}, mac FROM trust_stores "  # noqa: S608
                                   "WHERE name = ?", (name,)).fetchone()
            row = self._checked_row("trust", name, row)
        if row is None:
            return None
        try:
            return ([bytes.fromhex(h) for h in json.loads(row[1])],
                    [bytes.fromhex(h) for h in json.loads(row[2])])
        except (ValueError, TypeError) as exc:  # authenticated, so only a bug gets here
            raise KeyStoreError(f"trust store {name!r}: malformed row ({exc})") from None

    def store_trust_store(self, name: str, anchors: list[bytes], crls: list[bytes]) -> int:
        """Atomically replace a trust store; returns the new version."""
        with self._change() as entries:
            current = self._db.execute(f"SELECT {_TRUST_COLUMNS}, mac FROM trust_stores "  # noqa: S608
                                       "WHERE name = ?", (name,)).fetchone()
            current = self._checked_row("trust", name, current)
            version = current[3] + 1 if current else 1
            row = (name, json.dumps([a.hex() for a in anchors]),
                   json.dumps([c.hex() for c in crls]), version, time.time())
            mac = self._keys.mac("trust", row)
            self._db.execute("INSERT OR REPLACE INTO trust_stores (name, anchors, crls, version,"
                             " updated, mac) VALUES (?, ?, ?, ?, ?, ?)", (*row, mac))
            entries[("trust", name)] = (version, mac.hex())
        return version

    # --- recovery ------------------------------------------------------------------------
    def repair(self) -> list[Problem]:
        """Drop every row that fails authentication, and rows the manifest does not list in
        that version (stale copies); re-seal the manifest over the rest. Returns what was
        dropped: those keys are lost. With a damaged manifest, every row whose own MAC holds
        is kept."""
        dropped: list[Problem] = []
        with self._lock, _transaction(self._db):
            try:
                manifest: dict[tuple[str, str], tuple[int, str]] | None = self._load_manifest()
            except KeyStoreError:
                manifest = None
            entries: dict[tuple[str, str], tuple[int, str]] = {}
            for kind, (table, columns) in _KINDS.items():
                for rowid, *fields in list(self._db.execute(
                        f"SELECT rowid, {columns}, mac FROM {table}")):  # noqa: S608
                    row = tuple(fields)
                    name, version, mac = str(row[0]), _version(kind, row), _mac_of(row)
                    why = None
                    if not hmac.compare_digest(self._keys.mac(kind, tuple(row[:-1])), mac):
                        why = "fails authentication"
                    elif manifest is not None and manifest.get((kind, name), (None,))[0] \
                            != version:
                        why = "is not the version the manifest lists"
                    if why is None and (kind, name) not in entries:
                        entries[(kind, name)] = (int(version or 0), mac.hex())
                        continue
                    dropped.append(Problem(kind, name, version, why or "duplicate"))
                    self._db.execute(f"DELETE FROM {table} WHERE rowid = ?",  # noqa: S608
                                     (rowid,))
            for (kind, name), (version, _) in (manifest or {}).items():
                if (kind, name) not in entries:
                    dropped.append(Problem(kind, name, version, "was missing; forgotten"))
            generation = int(_meta(self._db).get("generation", "0") or 0)
            self._write_manifest(generation + 1, entries)
        return dropped


# --- helpers --------------------------------------------------------------------------------
def _version(kind: str, row: tuple[Any, ...]) -> int | None:
    value = row[{"key": 1, "cert": 2, "trust": 3}[kind]]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mac_of(row: tuple[Any, ...]) -> bytes:
    return bytes(row[-1]) if isinstance(row[-1], bytes) else b""


def default_kek_path(path: Path) -> Path:
    """Where the KEK file of store ``path`` lives unless configured."""
    return path.with_name(path.name + ".kek")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db
    except sqlite3.DatabaseError as exc:
        raise KeyStoreError(f"key store {path} is not a readable SQLite database ({exc}): "
                            f"{RECOVERY}") from None


def _layout(db: sqlite3.Connection, path: Path) -> str:
    """"empty", "v1", "v2", "unknown-newer" or "damaged"."""
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables or not tables & {"key_slots", "cert_slots", "trust_stores"}:
            if "meta" in tables and _meta(db).get("state") == "initialising":
                return "v2"
            return "empty"
        columns = {r[1] for r in db.execute("PRAGMA table_info(key_slots)")}
        meta = _meta(db) if "meta" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise KeyStoreError(f"key store {path} is not a readable SQLite database ({exc}): "
                            f"{RECOVERY}") from None
    version = meta.get("schema_version")
    if version is None:
        return "v1" if "mac" not in columns and "secret" in columns else "damaged"
    if not version.isdigit():
        return "damaged"
    if int(version) > SCHEMA_VERSION:
        return "unknown-newer"
    return "v2" if int(version) == SCHEMA_VERSION and "mac" in columns else "damaged"


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError:
        return {}


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# --- schema 1 -> 2 ----------------------------------------------------------------------------
def migrate_v1(path: Path, kek_source: KekSource | None = None, kek_path: Path | None = None,
               *, drop_invalid: bool = False) -> tuple[Path, list[str], list[str]]:
    """Convert a schema-1 store in place (a backup copy is kept).

    Schema 1 authenticated only the wrapped material (bound to slot name, version,
    provider and algorithm). Every secret row must still unwrap under the KEK; its other
    columns are taken as they are — the caller shows them for review. Returns (backup
    path, rows converted, rows dropped).
    """
    source = kek_source or FileKekSource()
    kek_file = kek_path or default_kek_path(path)
    if not path.exists():
        raise KeyStoreError(f"no key store at {path}")
    db = _connect(path)
    try:
        if _layout(db, path) != "v1":
            raise KeyStoreError(f"key store {path} is not a schema-1 store; nothing to do")
        if not source.exists(kek_file):
            raise KeyStoreError(f"the key-encryption key {kek_file} is missing; schema-1 "
                                "material cannot be unwrapped without it")
        kek = source.load_or_create(kek_file)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.schema1-{stamp}")
        with sqlite3.connect(str(backup)) as copy:
            db.backup(copy)
        os.chmod(backup, 0o600)
        old = AESGCM(kek)
        keys = _Keys(kek, os.urandom(16))
        converted: list[str] = []
        dropped: list[str] = []
        rows: list[tuple[str, tuple[Any, ...], bytes]] = []
        for r in db.execute("SELECT name, algorithm, provider, compatible, permissions, "
                            "version, secret, blob, created, updated FROM key_slots"):
            name, algorithm, provider, compatible, perms, version, secret, blob = r[:8]
            try:
                compat = [int(c) for c in json.loads(compatible)]
                material = bytes(blob)
                if secret:
                    aad = json.dumps(["cryptostack-slot/1", name, version, provider,
                                      algorithm]).encode()
                    material = old.decrypt(material[:12], material[12:], aad)
            except Exception as exc:  # noqa: BLE001 - reported per row
                dropped.append(f"key slot {name!r} v{version}: {type(exc).__name__ or exc}")
                continue
            meta = (name, version, algorithm, provider, json.dumps(compat), int(perms), None,
                    int(bool(secret)))
            if secret:
                nonce = os.urandom(12)
                material = nonce + keys.wrap.encrypt(nonce, material, keys.aad(meta))
            rows.append(("key", (*meta, material, r[8], r[9]), b""))
            converted.append(f"key slot {name!r} v{version}: {algorithm} on provider "
                             f"{provider}, permissions "
                             f"{KeyOperationPermission(perms).name or 'none'}, compatible "
                             f"{compat}, {'wrapped' if secret else 'provider-held'}")
        for r in db.execute("SELECT name, der, version, updated FROM cert_slots"):
            rows.append(("cert", (r[0], bytes(r[1]), r[2], r[3]), b""))
            converted.append(f"certificate slot {r[0]!r} v{r[2]}")
        for r in db.execute("SELECT name, anchors, crls, version, updated FROM trust_stores"):
            try:
                for column in (r[1], r[2]):
                    [bytes.fromhex(h) for h in json.loads(column)]
            except (ValueError, TypeError) as exc:
                dropped.append(f"trust store {r[0]!r}: malformed ({exc})")
                continue
            rows.append(("trust", tuple(r), b""))
            converted.append(f"trust store {r[0]!r} v{r[3]}")
        if dropped and not drop_invalid:
            raise KeyStoreError("schema-1 rows that do not unwrap or parse: "
                                + "; ".join(dropped)
                                + " — nothing was changed; rerun with --drop-invalid to "
                                  "convert without them")
        with _transaction(db):
            for table in ("key_slots", "cert_slots", "trust_stores", "meta"):
                db.execute(f"DROP TABLE IF EXISTS {table}")  # noqa: S608
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            store = KeyStore(path, db, keys)
            entries: dict[tuple[str, str], tuple[int, str]] = {}
            for kind, row, _ in rows:
                table, columns = _KINDS[kind]
                mac = keys.mac(kind, row)
                marks = ", ".join("?" * (len(row) + 1))
                db.execute(f"INSERT INTO {table} ({columns}, mac) VALUES ({marks})",  # noqa: S608
                           (*row, mac))
                version = row[1] if kind == "key" else row[2] if kind == "cert" else row[3]
                entries[(kind, str(row[0]))] = (int(version), mac.hex())
            for key, value in (("schema_version", str(SCHEMA_VERSION)),
                               ("store_id", keys.store_id.hex()),
                               ("kek_check", keys.kek_check()), ("state", "ready")):
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            store._write_manifest(1, entries)
        return backup, converted, dropped
    finally:
        db.close()


def set_aside(path: Path, kek_path: Path | None = None) -> list[Path]:
    """Rename a store (with its WAL files) and its KEK file out of the way; returns the new
    names. The next start creates a fresh, empty store."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for item in (path, Path(f"{path}-wal"), Path(f"{path}-shm"),
                 kek_path or default_kek_path(path)):
        if item.exists():
            target = item.with_name(f"{item.name}.reset-{stamp}")
            shutil.move(str(item), str(target))
            moved.append(target)
    return moved
