"""Backing up the key store: SQLite's online backup API, safe while the daemon runs.

The backup is a consistent snapshot of the store (WAL content included) written to one
self-contained file (``journal_mode=DELETE``, mode 0600), then checked with
``PRAGMA integrity_check``. It holds key material wrapped under the KEK, never the KEK:
the KEK is backed up separately (docs/operations.md).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptostack_core.wire.errors import CryptoError, ErrorCode


@dataclass(frozen=True)
class BackupResult:
    """What a backup copied."""

    path: Path
    key_slots: int
    cert_slots: int
    trust_stores: int
    size: int


def backup_store(store: Path, destination: Path) -> BackupResult:
    """Copy the key store at ``store`` into a new file ``destination``.

    INVALID_ARGUMENT when the store does not exist or ``destination`` does; the
    destination is written under a temporary name and renamed only once complete and checked.
    """
    if not store.is_file():
        raise CryptoError(ErrorCode.INVALID_ARGUMENT, f"no key store at {store}")
    if destination.exists():
        raise CryptoError(
            ErrorCode.INVALID_ARGUMENT, f"{destination} exists; a backup never overwrites a file"
        )
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    source = sqlite3.connect(f"file:{store}?mode=rw", uri=True)  # never creates a store
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        target = sqlite3.connect(str(tmp))
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
            check = target.execute("PRAGMA integrity_check").fetchone()
            if not check or check[0] != "ok":
                raise CryptoError(ErrorCode.INTERNAL_ERROR, f"the backup failed its integrity check: {check}")
            counts = [_count(target, table) for table in ("key_slots", "cert_slots", "trust_stores")]
        finally:
            target.close()
        _fsync(tmp)
        os.rename(tmp, destination)
        _fsync(destination.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    slots, certs, stores = counts
    return BackupResult(destination, slots, certs, stores, destination.stat().st_size)


def _count(db: sqlite3.Connection, table: str) -> int:
    try:
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
    except sqlite3.OperationalError:
        return 0
    return int(row[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
