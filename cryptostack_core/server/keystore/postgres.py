"""The shared key store engine: PostgreSQL, through psycopg 3.

Why psycopg 3 (not asyncpg): the key store is called from the daemon's worker threads (a
provider's pool or the control pool), never awaited on the event loop, so a synchronous
driver fits without a bridge; psycopg runs LISTEN/NOTIFY on a plain blocking connection in a
thread of its own (``Connection.notifies``), maps server errors to classes
(``LockNotAvailable``, ``OperationalError`` for a lost connection), and ships libpq in its
binary wheel, so nothing beyond ``pip install cryptostack-core[postgresql]`` is needed.

Many daemons, one truth:

* **writes** run in a transaction that first takes a transaction-scoped advisory lock
  (``pg_advisory_xact_lock``): one writer at a time across every daemon, each seeing the
  previous one's commit (READ COMMITTED: every statement after the lock sees it), so version
  numbers are assigned without gaps, duplicates or losses. The lock wait is bounded by the
  request's deadline (``lock_timeout``, 10 s without one).
* **reads** that must agree with each other (the manifest and the rows it lists) run in one
  ``REPEATABLE READ, READ ONLY`` transaction.
* **other daemons' changes**: every write sends ``NOTIFY cryptostack_keystore`` (delivered at
  commit). A listener thread holds its own connection with ``LISTEN``; a notification marks
  the cache stale, and the next use re-reads the manifest (one query). While the listener is
  not connected (at start, after a lost connection) every use checks the manifest instead:
  notifications missed in between cannot leave a daemon on an old version.
* **a lost database**: calls that need it fail with ``KEYSTORE_UNAVAILABLE`` naming the
  store and the cause; keys and rows the daemon already holds keep working, without a
  connection attempt per use. Reconnecting is tried on the next call that needs the store
  (at most once a second, so an outage costs callers an immediate answer, not a connect
  timeout each) and by the listener (backoff up to 2 s); once the listener is back, the
  next use re-reads the manifest. Nothing needs a restart.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cryptostack_core.sdk.deadline import remaining_time
from cryptostack_core.server.keystore.backend import Backend, Row, Tx, rows
from cryptostack_core.server.keystore.errors import KeyStoreError, KeyStoreUnavailable

CHANNEL = "cryptostack_keystore"
LOCK_ID = 0x63727970746F  # "crypto": the store-wide write lock (pg_advisory_xact_lock)
CONNECT_TIMEOUT = 5  # seconds (libpq's minimum is 2)
RETRY_INTERVAL = 1.0  # seconds between reconnection attempts by callers
DEFAULT_LOCK_TIMEOUT = 10.0  # seconds a writer waits for the write lock without a deadline
MAX_BACKOFF = 2.0  # seconds between the listener's reconnection attempts, at most
LISTEN_POLL = 0.25  # seconds the listener waits for notifications before checking for close
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def redact(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://?"
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise KeyStoreError(
            "a postgresql:// key store needs psycopg 3: pip install 'cryptostack-core[postgresql]'"
        ) from None
    return psycopg


class _PgTx(Tx):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn.execute(sql.replace("?", "%s"), tuple(params))
        return rows(cur.fetchall()) if cur.description is not None else []

    def notify(self, generation: int) -> None:
        self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(generation)))


class PostgresBackend(Backend):
    """A store in the PostgreSQL database ``url`` (``postgresql://user@host/db``; a password
    belongs in ``~/.pgpass`` or ``PGPASSFILE``, not the configuration)."""

    engine = "postgresql"

    def __init__(self, url: str, *, listen: bool = True) -> None:
        self._pg = _psycopg()
        self.url = url
        self.location = redact(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._down: str | None = None
        self._last_attempt = 0.0
        self._stale = threading.Event()
        self._stale.set()
        self._listening = False
        self._closed = threading.Event()
        self._connection()  # fails the start with KEYSTORE_UNAVAILABLE if unreachable
        self._listener: threading.Thread | None = None
        if listen:
            self._listener = threading.Thread(target=self._listen, name="keystore-listen", daemon=True)
            self._listener.start()

    # --- connections -------------------------------------------------------------------
    def _connect(self) -> Any:
        return self._pg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="cryptostack",
            **_KEEPALIVES,
        )

    def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        now = time.monotonic()
        if self._down is not None and now - self._last_attempt < RETRY_INTERVAL:
            raise self._unavailable()
        self._last_attempt = now
        try:
            self._conn = self._connect()
        except self._pg.Error as exc:
            self._lost(exc)
            raise self._unavailable() from None
        if self._down is not None:
            self._down = None
        self._stale.set()  # whatever happened meanwhile is read again
        return self._conn

    def _lost(self, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self._down = reason
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _unavailable(self, maybe_committed: bool = False) -> KeyStoreUnavailable:
        return KeyStoreUnavailable(
            f"the key store {self.location} is unreachable ({self._down}); keys already "
            "loaded keep working, and the daemon reconnects by itself",
            maybe_committed=maybe_committed,
        )

    def _failure(self, exc: BaseException, maybe_committed: bool = False) -> KeyStoreUnavailable:
        if isinstance(exc, self._pg.OperationalError) or self._conn is None or self._conn.broken:
            self._lost(exc)
            return self._unavailable(maybe_committed)
        if isinstance(exc, self._pg.errors.LockNotAvailable):
            return KeyStoreUnavailable(
                f"the key store {self.location} is busy: another "
                "daemon held its write lock past this request's "
                "deadline; retry"
            )
        return KeyStoreUnavailable(f"the key store {self.location} failed: {type(exc).__name__}: {exc}")

    # --- access --------------------------------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except self._pg.Error as exc:
                raise self._failure(exc) from None
            try:
                yield _PgTx(conn)
            except self._pg.Error as exc:
                self._rollback(conn)
                raise self._failure(exc) from None
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except self._pg.Error as exc:
                raise self._failure(exc) from None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            conn = self._connection()
            left = remaining_time()
            wait = DEFAULT_LOCK_TIMEOUT if left is None else max(0.001, left)
            try:
                conn.execute("BEGIN")
                conn.execute(f"SET LOCAL lock_timeout = {int(wait * 1000) + 1}")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
            except self._pg.Error as exc:
                self._rollback(conn)
                raise self._failure(exc) from None
            try:
                yield _PgTx(conn)
            except self._pg.Error as exc:
                self._rollback(conn)
                raise self._failure(exc) from None
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except self._pg.Error as exc:
                raise self._failure(exc, maybe_committed=True) from None

    def _rollback(self, conn: Any) -> None:
        try:
            if not conn.closed and not conn.broken:
                conn.execute("ROLLBACK")
        except self._pg.Error:
            pass

    def changed(self) -> bool:
        if self._down is not None:
            # The database was lost: nothing can be learnt from it, so what is cached is
            # used, with no connection attempt per use. Once the listener is back in, check.
            return self._listening
        if not self._listening:
            return True  # nothing would tell us about other daemons' changes: check
        if self._stale.is_set():
            self._stale.clear()
            return True
        return False

    def tables(self) -> dict[str, set[str]]:
        with self.snapshot() as tx:
            found = tx.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
        tables: dict[str, set[str]] = {}
        for table, column in found:
            tables.setdefault(str(table), set()).add(str(column))
        return tables

    def rename_tables(self, suffix: str) -> list[str]:
        moved = []
        with self.transaction() as tx:
            present = {
                str(r[0])
                for r in tx.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            }
            for table in ("meta", "key_slots", "cert_slots", "trust_stores"):
                if table in present:
                    tx.execute(f'ALTER TABLE {table} RENAME TO "{table}_{suffix}"')
                    moved.append(f"{self.location} table {table}_{suffix}")
        return moved

    def status(self) -> dict[str, Any]:
        conn = self._conn
        available = conn is not None and not conn.closed and not conn.broken
        facts: dict[str, Any] = {
            "engine": self.engine,
            "location": self.location,
            "available": available and self._down is None,
            "notifications": self._listening,
        }
        if self._down is not None:
            facts["reason"] = self._down
        return facts

    # --- notifications ---------------------------------------------------------------
    def _listen(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            conn = None
            try:
                conn = self._connect()
                conn.execute(f"LISTEN {CHANNEL}")
                self._listening = True
                self._stale.set()  # anything sent while we were not listening is lost
                backoff = 0.1
                while not self._closed.is_set():
                    for _note in conn.notifies(timeout=LISTEN_POLL):
                        self._stale.set()
            except self._pg.Error:
                pass
            finally:
                self._listening = False
                self._stale.set()
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
            self._closed.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001
                    pass
                self._conn = None
        if self._listener is not None:
            self._listener.join(timeout=2 * LISTEN_POLL + 1)
