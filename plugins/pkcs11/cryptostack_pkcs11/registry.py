"""The token objects this provider created: a durable record for crash consistency.

``persist_key`` makes token objects (``C_CopyObject`` with ``CKA_TOKEN``) that the daemon then
records in its key store; clearing or replacing a slot removes the record first and destroys
the objects after. A crash between the two steps would leave token objects no slot names --
copies of keys whose slot may even have been cleared. So every token object this provider
makes is recorded here, durably (SQLite, ``synchronous=FULL``), *before* it is created, and
the record is removed only *after* the object is destroyed. At daemon start
(:meth:`~cryptostack_pkcs11.provider.PKCS11Provider.reconcile_stored`) every recorded object
that no key-store reference names is destroyed, and audited.

Records are per provider id and token label, so several providers (or tokens) may share a
state directory. Objects made outside cryptostack, or by versions before this record
existed, are never touched.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS token_objects (
    provider INTEGER NOT NULL,
    token TEXT NOT NULL,
    key_id BLOB NOT NULL,
    label TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (provider, token, key_id)
);
"""


class TokenObjectRegistry:
    """Durable record of the token objects one provider created on one token."""

    def __init__(self, path: Path, provider: int, token: str) -> None:
        self.path = path
        self._scope = (provider, token)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def add(self, key_id: bytes, label: str) -> None:
        """Record an object about to be created (durable when this returns)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO token_objects VALUES (?, ?, ?, ?, ?)",
                (*self._scope, key_id, label, time.time()),
            )

    def remove(self, key_id: bytes) -> None:
        """Forget an object that has been destroyed."""
        with self._lock:
            self._db.execute(
                "DELETE FROM token_objects WHERE provider = ? AND token = ? AND key_id = ?",
                (*self._scope, key_id),
            )

    def entries(self) -> list[tuple[bytes, str]]:
        """(CKA_ID, label) of every recorded object, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, label FROM token_objects WHERE provider = ? AND token = ? ORDER BY created",
                self._scope,
            ).fetchall()
        return [(bytes(key_id), str(label)) for key_id, label in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
