"""The persistent key store: key slots, certificate slots and trust stores in SQLite.

Durability: WAL journal with ``synchronous=FULL``, one transaction per change, so once a
write returns it survives ``kill -9``, and a crash mid-write leaves the previous content.
Secret material from software providers is wrapped with AES-256-GCM under a key-encryption
key (KEK); the wrapping binds the slot name, version, provider and algorithm as associated
data, so a blob copied into another row does not unwrap. Providers that keep their own keys
(HSM, TPM) store only a reference here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cryptostack_core.sdk.provider import KekSource, StoredKey
from cryptostack_core.wire.errors import CryptoError, ErrorCode
from cryptostack_core.wire.permissions import KeyOperationPermission

KEK_SIZE = 32
_SCHEMA = """
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


class KeyStore:
    """SQLite-backed store; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path | None, kek: bytes) -> None:
        if len(kek) != KEK_SIZE:
            raise ValueError("KEK must be 32 bytes")
        self.path = path
        self._aead = AESGCM(kek)
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False,
                                   isolation_level=None)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            os.chmod(path, 0o600)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: Path | None, kek_source: KekSource | None = None,
             kek_path: Path | None = None) -> KeyStore:
        """Open (creating on first start) the store and its KEK."""
        if path is None:
            return cls(None, os.urandom(KEK_SIZE))
        source = kek_source or FileKekSource()
        kek_file = kek_path or path.with_name(path.name + ".kek")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, source.load_or_create(kek_file))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # --- key slots -------------------------------------------------------------------
    @staticmethod
    def _aad(name: str, version: int, provider: int, algorithm: str) -> bytes:
        return json.dumps(["cryptostack-slot/1", name, version, provider, algorithm]).encode()

    def slot(self, name: str) -> SlotRecord | None:
        """Metadata of a stored slot, or None if the slot is empty."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, algorithm, provider, compatible, permissions, version, created,"
                " updated FROM key_slots WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return SlotRecord(row[0], row[1], row[2], tuple(json.loads(row[3])),
                          KeyOperationPermission(row[4]), row[5], row[6], row[7])

    def load_key(self, name: str) -> tuple[SlotRecord, StoredKey]:
        """Metadata and unwrapped :class:`StoredKey` of a slot; SLOT_EMPTY if none."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, algorithm, provider, compatible, permissions, version, created,"
                " updated, secret, blob FROM key_slots WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise CryptoError(ErrorCode.SLOT_EMPTY, f"key slot {name!r} is empty")
        record = SlotRecord(row[0], row[1], row[2], tuple(json.loads(row[3])),
                            KeyOperationPermission(row[4]), row[5], row[6], row[7])
        secret, blob = bool(row[8]), bytes(row[9])
        if secret:
            try:
                blob = self._aead.decrypt(blob[:12], blob[12:], self._aad(
                    name, record.version, record.provider, record.algorithm))
            except Exception:
                raise CryptoError(ErrorCode.INTERNAL_ERROR,
                                  f"key slot {name!r} does not unwrap under this key store's "
                                  "KEK (tampered, or the KEK file was replaced)") from None
        return record, StoredKey(blob, secret)

    def store_key(self, name: str, algorithm: str, provider: int, compatible: tuple[int, ...],
                  permissions: KeyOperationPermission, stored: StoredKey) -> tuple[int, StoredKey | None]:
        """Atomically replace slot ``name``. Returns the new version and the previous
        :class:`StoredKey` (so its provider can destroy a durable copy), if any."""
        now = time.time()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT version, created, secret, blob FROM key_slots "
                                  "WHERE name = ?", (name,)).fetchone()
                version = (row[0] + 1) if row else 1
                created = row[1] if row else now
                previous = None
                if row is not None and not row[2]:
                    previous = StoredKey(bytes(row[3]), False)
                blob = stored.blob
                if stored.secret:
                    nonce = os.urandom(12)
                    blob = nonce + self._aead.encrypt(
                        nonce, stored.blob, self._aad(name, version, provider, algorithm))
                cur.execute(
                    "INSERT OR REPLACE INTO key_slots (name, algorithm, provider, compatible,"
                    " permissions, version, secret, blob, created, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, algorithm, provider, json.dumps(list(compatible)), int(permissions),
                     version, int(stored.secret), blob, created, now))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return version, previous

    def clear_slot(self, name: str) -> StoredKey | None:
        """Empty a slot; returns the removed reference (non-secret) for provider cleanup."""
        with self._lock:
            row = self._db.execute("SELECT secret, blob FROM key_slots WHERE name = ?",
                                   (name,)).fetchone()
            self._db.execute("DELETE FROM key_slots WHERE name = ?", (name,))
        if row is not None and not row[0]:
            return StoredKey(bytes(row[1]), False)
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
            return [r[0] for r in self._db.execute("SELECT name FROM key_slots ORDER BY name")]

    # --- certificates and trust stores ----------------------------------------------
    def certificate(self, name: str) -> bytes | None:
        """DER of a stored certificate slot."""
        with self._lock:
            row = self._db.execute("SELECT der FROM cert_slots WHERE name = ?",
                                   (name,)).fetchone()
        return bytes(row[0]) if row else None

    def store_certificate(self, name: str, der: bytes) -> int:
        """Atomically replace a certificate slot; returns the new version."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT version FROM cert_slots WHERE name = ?",
                                  (name,)).fetchone()
                version = row[0] + 1 if row else 1
                cur.execute("INSERT OR REPLACE INTO cert_slots (name, der, version, updated)"
                            " VALUES (?, ?, ?, ?)", (name, der, version, time.time()))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return version

    def trust_store(self, name: str) -> tuple[list[bytes], list[bytes]] | None:
        """(anchor DERs, CRL DERs) of a stored trust store."""
        with self._lock:
            row = self._db.execute("SELECT anchors, crls FROM trust_stores WHERE name = ?",
                                   (name,)).fetchone()
        if row is None:
            return None
        return ([bytes.fromhex(h) for h in json.loads(row[0])],
                [bytes.fromhex(h) for h in json.loads(row[1])])

    def store_trust_store(self, name: str, anchors: list[bytes], crls: list[bytes]) -> int:
        """Atomically replace a trust store; returns the new version."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute("SELECT version FROM trust_stores WHERE name = ?",
                                  (name,)).fetchone()
                version = row[0] + 1 if row else 1
                cur.execute(
                    "INSERT OR REPLACE INTO trust_stores (name, anchors, crls, version, updated)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, json.dumps([a.hex() for a in anchors]),
                     json.dumps([c.hex() for c in crls]), version, time.time()))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return version
