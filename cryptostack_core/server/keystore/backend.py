"""What the key store needs from a database: one interface, two engines.

:class:`~.store.KeyStore` holds all the logic (authentication, versions, the manifest); a
backend only runs SQL. Both engines take the same statements, written with ``?``
placeholders and the common ``INSERT ... ON CONFLICT`` upsert:

* :mod:`.sqlite`: one file, the embedded default (WAL, ``synchronous=FULL``);
* :mod:`.postgres`: a database shared by several daemons.

A backend gives three kinds of access:

* :meth:`Backend.snapshot` -- several reads that see one consistent state (the manifest and
  the rows it lists must come from the same moment while other daemons write);
* :meth:`Backend.transaction` -- a write transaction that holds the store-wide write lock,
  so writers (threads, processes, daemons on other hosts) run one after the other and each
  sees what the previous one committed;
* :meth:`Backend.changed` -- a cheap test, for every use of a cached row, of whether another
  writer may have committed since the last call.

Connectivity failures are :class:`~.errors.KeyStoreUnavailable`; integrity failures are the
store's business.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

Row = tuple[Any, ...]

# Column types by engine: (blob, real, integer)
_TYPES = {"sqlite": ("BLOB", "REAL", "INTEGER"), "postgresql": ("BYTEA", "DOUBLE PRECISION", "BIGINT")}

KEY_COLUMNS = (
    "name",
    "version",
    "algorithm",
    "provider",
    "compatible",
    "permissions",
    "export_uids",
    "secret",
    "blob",
    "created",
    "updated",
    "state",
)
"""A key row's columns in MAC order (schema 3); ``mac`` follows."""
CERT_COLUMNS = ("name", "der", "version", "updated")
TRUST_COLUMNS = ("name", "anchors", "crls", "version", "updated")
TABLES = {"key": "key_slots", "cert": "cert_slots", "trust": "trust_stores"}
COLUMNS = {"key": KEY_COLUMNS, "cert": CERT_COLUMNS, "trust": TRUST_COLUMNS}


def schema(engine: str) -> list[str]:
    """CREATE TABLE statements of schema 3 for ``engine``."""
    blob, real, integer = _TYPES[engine]
    return [
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS key_slots (
            name TEXT NOT NULL, version {integer} NOT NULL, algorithm TEXT NOT NULL,
            provider {integer} NOT NULL, compatible TEXT NOT NULL, permissions {integer} NOT NULL,
            export_uids TEXT, secret {integer} NOT NULL, blob {blob} NOT NULL,
            created {real} NOT NULL, updated {real} NOT NULL, state TEXT NOT NULL,
            mac {blob} NOT NULL, PRIMARY KEY (name, version))""",
        f"""CREATE TABLE IF NOT EXISTS cert_slots (
            name TEXT PRIMARY KEY, der {blob} NOT NULL, version {integer} NOT NULL,
            updated {real} NOT NULL, mac {blob} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS trust_stores (
            name TEXT PRIMARY KEY, anchors TEXT NOT NULL, crls TEXT NOT NULL,
            version {integer} NOT NULL, updated {real} NOT NULL, mac {blob} NOT NULL)""",
    ]


class Tx(abc.ABC):
    """Statements inside a snapshot or a transaction."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; its rows (``[]`` for statements without)."""

    def notify(self, generation: int) -> None:
        """Tell other daemons, at commit, that the store moved to ``generation``."""


class Backend(abc.ABC):
    """A database holding one key store."""

    engine = ""
    """``sqlite`` or ``postgresql``."""
    location = ""
    """Where the store is, for messages (never a password)."""

    @abc.abstractmethod
    def snapshot(self) -> AbstractContextManager[Tx]:
        """Reads that all see one committed state."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction under the store-wide write lock; committed when the block
        ends, rolled back if it raises."""

    @abc.abstractmethod
    def changed(self) -> bool:
        """Whether another writer may have committed since the last call (cheap: called on
        every use of a cached row). True when it cannot tell."""

    @abc.abstractmethod
    def tables(self) -> dict[str, set[str]]:
        """The store's tables and their columns (empty for a new database)."""

    def create_schema(self, tx: Tx) -> None:
        """Create schema 3's tables (inside ``tx``)."""
        for statement in schema(self.engine):
            tx.execute(statement)

    def rename_tables(self, suffix: str) -> list[str]:
        """Set the store's tables aside under ``<table>_<suffix>`` (``keystore reset``);
        returns the new names. Only for engines where the store is not a file."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """Facts for ``status``: engine, location, whether it is reachable now."""
        return {"engine": self.engine, "location": self.location, "available": True}

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect."""


def rows(result: Iterator[Row] | list[Row]) -> list[Row]:
    """Rows as tuples of plain Python values (bytes for blobs)."""
    out = []
    for row in result:
        out.append(tuple(bytes(v) if isinstance(v, (memoryview, bytearray)) else v for v in row))
    return out
