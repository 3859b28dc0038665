"""The embedded key store engine: one SQLite file (or memory).

Durability: WAL journal with ``synchronous=FULL``, one transaction per change, so once a
write returns it survives ``kill -9``, and a crash mid-write leaves the previous content.
Writers take the database's write lock up front (``BEGIN IMMEDIATE``), so two processes on
one file also serialise; :meth:`SqliteBackend.changed` reads ``PRAGMA data_version``, which
moves when another connection commits (a few microseconds, no I/O).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptostack_core.server.keystore.backend import Backend, Row, Tx, rows
from cryptostack_core.server.keystore.errors import RECOVERY, KeyStoreError, KeyStoreUnavailable

BUSY_TIMEOUT_MS = 30_000


class _SqliteTx(Tx):
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return rows(self._db.execute(sql, tuple(params)).fetchall())


class SqliteBackend(Backend):
    """A store in the SQLite file ``path`` (None: in memory, lost at exit)."""

    engine = "sqlite"

    def __init__(self, path: Path | None, *, create: bool = True) -> None:
        self.path = path
        self.location = str(path) if path is not None else ":memory:"
        self._lock = threading.RLock()
        try:
            if path is None:
                db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            else:
                if create:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    os.close(fd)
                    os.chmod(path, 0o600)
                    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
                else:
                    db = sqlite3.connect(
                        f"file:{path}?mode=rw", uri=True, check_same_thread=False, isolation_level=None
                    )
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise _unreadable(self.location, exc) from None
        self._db = db
        self._data_version = self._version()

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        with self._lock:
            try:
                self._db.execute("BEGIN")
            except sqlite3.DatabaseError as exc:
                raise _unreadable(self.location, exc) from None
            try:
                yield _SqliteTx(self._db)
            except sqlite3.DatabaseError as exc:
                self._db.execute("ROLLBACK")
                raise _unreadable(self.location, exc) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise KeyStoreUnavailable(
                    f"key store {self.location}: cannot take the write lock ({exc})"
                ) from None
            try:
                yield _SqliteTx(self._db)
            except sqlite3.DatabaseError as exc:
                self._db.execute("ROLLBACK")
                raise _unreadable(self.location, exc) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise KeyStoreUnavailable(
                    f"key store {self.location}: commit failed ({exc})", maybe_committed=True
                ) from None
            self._data_version = self._version()  # our own commit is not news

    def changed(self) -> bool:
        with self._lock:
            try:
                version = self._version()
            except sqlite3.DatabaseError:
                return True
            moved, self._data_version = version != self._data_version, version
            return moved

    def tables(self) -> dict[str, set[str]]:
        with self._lock:
            try:
                names = [
                    r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                ]
                return {
                    name: {r[1] for r in self._db.execute(f"PRAGMA table_info({name})")} for name in names
                }
            except sqlite3.DatabaseError as exc:
                raise _unreadable(self.location, exc) from None

    def raw(self) -> sqlite3.Connection:
        """The connection (migration and backup only)."""
        return self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _unreadable(location: str, exc: Exception) -> KeyStoreError:
    return KeyStoreError(f"key store {location} is not a readable SQLite database ({exc}): {RECOVERY}")
