"""One SQLite file holding the embedded backend's state and queue, with its transactions.

The state store and the task queue share this database so that a state change and the
messages it makes due commit in one transaction (the outbox needs no second write).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from core.domain.records import Message
from core.errors import ConfigurationError, InfrastructureError, StoreUnavailable

SCHEMA_VERSION: Final = 1
"""Bumped, with a migration step in ``_create_schema``, whenever a table or index changes."""

DB_FILE_NAME: Final = "relay.db"

_SCHEMA_V1: Final = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        error TEXT,
        definition_hash TEXT NOT NULL,
        idempotency_key TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        is_cancel_requested INTEGER NOT NULL,
        version INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at DESC, run_id DESC)",
    "CREATE INDEX IF NOT EXISTS runs_by_saga ON runs (saga, created_at DESC, run_id DESC)",
    "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at DESC, run_id DESC)",
    # WITHOUT ROWID clusters a run's steps together, so load_run reads one b-tree range.
    """CREATE TABLE IF NOT EXISTS steps (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        budget_start INTEGER NOT NULL,
        lease_until REAL,
        retry_at REAL,
        output TEXT NOT NULL,
        error TEXT,
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID""",
    # A rowid table on purpose: the rowid is the enqueue order that breaks visible_at ties,
    # and the (visible_at) index carries it, so lease_due is one index range scan.
    """CREATE TABLE IF NOT EXISTS queue (
        message_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        action TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        not_before REAL,
        visible_at REAL NOT NULL,
        delivery_count INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        receipt TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS queue_by_visible_at ON queue (visible_at)",
)

INSERT_MESSAGE_SQL: Final = (
    "INSERT OR IGNORE INTO queue"
    " (message_id, run_id, step, action, attempt, not_before, visible_at, enqueued_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Enqueue one message unless a row with its id is still queued or leased (dedup)."""

MessageRow = tuple[str, str, str, str, int, float | None, float, float]


def message_row(message: Message, now: float) -> MessageRow:
    """The ``INSERT_MESSAGE_SQL`` parameters for ``message`` enqueued at ``now``."""
    visible_at = now if message.not_before is None else message.not_before
    return (
        message.message_id,
        message.run_id,
        message.step,
        message.action.value,
        message.attempt,
        message.not_before,
        visible_at,
        now,
    )


# One lock per database file for the whole process: threads queue on it instead of on
# SQLite's busy handler, which sleeps and polls and so wastes most of a commit's time
# once 32 threads contend. Other processes still meet us through busy_timeout.
_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _lock_for(path: str) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


class _ThreadConnection(threading.local):
    """This thread's connection and the ``synchronous`` level it is currently set to."""

    conn: sqlite3.Connection | None = None
    synchronous: str = ""


class SQLiteDatabase:
    """A SQLite database file in WAL mode, one connection per thread.

    Write transactions are ``BEGIN IMMEDIATE`` (the write lock is taken up front, so a
    transaction never fails half-way on a lock upgrade) and are serialised within the
    process by a per-file lock. Connections are opened with ``check_same_thread=False``
    only so that :meth:`close` can close every thread's connection; each connection is
    still used by the one thread that opened it.

    Args:
        path: The database file; created, with its schema, if missing.
        busy_timeout_seconds: How long to wait for another process's write lock before
            giving up with ``StoreUnavailable``.
    """

    def __init__(self, path: Path | str, *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = os.path.realpath(path)
        self._busy_timeout_seconds = busy_timeout_seconds
        self._write_lock = _lock_for(self._path)
        self._local = _ThreadConnection()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_guard = threading.Lock()
        self._closed = False
        try:
            self._create_schema()
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, data_dir: Path) -> SQLiteDatabase:
        """Open (creating if needed) ``<data_dir>/relay.db``, the embedded backend's file."""
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / DB_FILE_NAME)

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def describe(self) -> dict[str, str]:
        """The file this database lives in, for logs and error messages."""
        return {"backend": "local", "path": self._path}

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = self._local.conn
        if conn is None:
            conn = self._open_connection()
        return conn

    @contextmanager
    def write_transaction(
        self, *, durable: bool, unavailable: type[InfrastructureError] = StoreUnavailable
    ) -> Iterator[sqlite3.Connection]:
        """Run the body in one ``BEGIN IMMEDIATE`` transaction; roll back if it raises.

        Args:
            durable: True for every state write: the commit is fsync'd
                (``synchronous=FULL``), so a run never loses a step it reported done.
                False only for queue lease/ack/release bookkeeping: losing such a commit
                in a power cut merely redelivers a message, which the step protocol
                tolerates, so it is not worth an fsync (``synchronous=NORMAL``).
            unavailable: The error raised when SQLite is locked or failing.

        Raises:
            StoreUnavailable: (or ``unavailable``) the database stayed locked past the
                busy timeout or failed with an I/O error; nothing was written.
        """
        conn = self.connection()
        wanted = "FULL" if durable else "NORMAL"
        with self._write_lock:
            try:
                if self._local.synchronous != wanted:
                    conn.execute("PRAGMA synchronous=" + wanted)
                    self._local.synchronous = wanted
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._unavailable(exc, unavailable) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback(conn)
                if _is_unavailable(exc):
                    raise self._unavailable(exc, unavailable) from exc
                raise

    @contextmanager
    def read_transaction(
        self, *, unavailable: type[InfrastructureError] = StoreUnavailable
    ) -> Iterator[sqlite3.Connection]:
        """Run the body's reads against one consistent snapshot of the database.

        Raises:
            StoreUnavailable: (or ``unavailable``) SQLite failed with an I/O error.
        """
        conn = self.connection()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if not _is_unavailable(exc):
                raise
            raise self._unavailable(exc, unavailable) from exc

    def close(self) -> None:
        """Close every thread's connection; call once no thread uses the database."""
        with self._connections_guard:
            self._closed = True
            connections, self._connections = self._connections, []
        for _, conn in connections:
            conn.close()
        self._local = _ThreadConnection()

    def _open_connection(self) -> sqlite3.Connection:
        with self._connections_guard:
            if self._closed:
                raise RuntimeError(f"SQLiteDatabase {self._path} is closed")
            # Reap connections of threads that have exited (thread pools come and go).
            alive = []
            for thread, old in self._connections:
                if thread.is_alive():
                    alive.append((thread, old))
                else:
                    old.close()
            try:
                conn = sqlite3.connect(
                    self._path,
                    timeout=self._busy_timeout_seconds,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise self._unavailable(exc, StoreUnavailable) from exc
            alive.append((threading.current_thread(), conn))
            self._connections = alive
        self._local.conn = conn
        self._local.synchronous = ""
        return conn

    def _create_schema(self) -> None:
        conn = self.connection()
        try:
            # WAL lets readers run beside the single writer; the mode is stored in the file.
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise self._unavailable(exc, StoreUnavailable) from exc
        with self.write_transaction(durable=True) as txn:
            txn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = txn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            found = row[0] if row is not None else None
            if found is None:
                for statement in _SCHEMA_V1:
                    txn.execute(statement)
                txn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif found > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"{self._path} has schema version {found}, newer than this Relay's "
                    f"{SCHEMA_VERSION}; upgrade Relay or point RELAY_DATA_DIR elsewhere"
                )

    def _rollback(self, conn: sqlite3.Connection) -> None:
        # SQLite rolls back by itself after some errors (SQLITE_FULL, SQLITE_IOERR).
        # The original error is the one worth reporting; a failed rollback leaves SQLite
        # to roll back from the journal on the next open.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _unavailable(
        self, exc: BaseException, kind: type[InfrastructureError]
    ) -> InfrastructureError:
        return kind(
            f"SQLite database {self._path} is unavailable ({exc}); check that no other "
            "process holds a long write lock, and that the disk is writable and not full"
        )


def _is_unavailable(exc: BaseException) -> bool:
    """True for lock timeouts and I/O failures, not for bugs (misuse, constraint errors)."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError
