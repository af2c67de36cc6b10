"""One SQLite file holding the embedded backend's state and queue, with its transactions.

The state store and the task queue share this database so that a state change and the
messages it makes due commit in one transaction (the outbox needs no second write).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from core.errors import InfrastructureError, StoreUnavailable
from infra.local.private_files import ensure_private_dir, ensure_private_file, tighten_if_present
from infra.local.sqlite_schema import DB_FILE_NAME, create_schema_txn

# One lock per database file for the whole process: threads queue on it instead of on
# SQLite's busy handler, which sleeps and polls and so wastes most of a commit's time
# once 32 threads contend. Other processes still meet us through busy_timeout.
_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _lock_for(path: str) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Write:
    """One caller's unit of work waiting for (or done by) a group commit."""

    work: Callable[[sqlite3.Connection], Any]
    durable: bool
    unavailable: type[InfrastructureError]
    is_done: bool = False
    result: Any = None
    error: BaseException | None = None


class _ThreadConnection(threading.local):
    """This thread's connection and the ``synchronous`` level it is currently set to."""

    conn: sqlite3.Connection | None = None
    synchronous: str = ""


class SQLiteDatabase:
    """A SQLite database file in WAL mode, one connection per thread.

    Write transactions are ``BEGIN IMMEDIATE`` (the write lock is taken up front, so a
    transaction never fails half-way on a lock upgrade) and are serialised within the
    process by a per-file lock. :meth:`run_write` also *group-commits*: units of work
    that arrive while a commit is in progress are run together in the next transaction,
    each inside its own savepoint, and share its one fsync. Each unit still commits or
    rolls back on its own, so callers see exactly the atomicity of a transaction per call.

    Connections are opened with ``check_same_thread=False`` so that :meth:`close` can
    close every thread's connection and a group-commit leader can run other threads' work
    on its own connection; a connection is never used by two threads at once.

    Args:
        path: The database file; created, with its schema, if missing.
        busy_timeout_seconds: How long to wait for another process's write lock before
            giving up with ``StoreUnavailable``.
    """

    def __init__(self, path: Path | str, *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = os.path.realpath(path)
        self._busy_timeout_seconds = busy_timeout_seconds
        self._write_lock = _lock_for(self._path)
        self._lock_fd: int | None = None
        self._local = _ThreadConnection()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_guard = threading.Lock()
        self._closed = False
        self._counts = {"durable": 0, "light": 0, "units": 0}
        self._counts_guard = threading.Lock()
        self._group = threading.Condition()
        self._pending: list[_Write] = []
        self._has_leader = False
        try:
            # Run data (tokens, emails) is private: 0600 whatever the umask; SQLite gives
            # its -wal and -shm files the database file's mode.
            if os.path.isdir(os.path.dirname(self._path)):  # else SQLite reports it
                ensure_private_file(self._path)
            for suffix in ("-wal", "-shm"):
                tighten_if_present(self._path + suffix)
            self._create_schema()
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, data_dir: Path) -> SQLiteDatabase:
        """Open (creating if needed) ``<data_dir>/relay.db``, the embedded backend's file."""
        ensure_private_dir(data_dir)
        return cls(data_dir / DB_FILE_NAME)

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def describe(self) -> dict[str, str]:
        """The file this database lives in, for logs and error messages."""
        return {"backend": "local", "path": self._path}

    def commit_counts(self) -> dict[str, int]:
        """Commits made so far: ``durable`` (fsync'd), ``light`` (not) and ``units``.

        ``units`` counts the write calls the commits carried; with group commit several
        units share one commit. Benchmarks divide these by step transitions.
        """
        with self._counts_guard:
            return dict(self._counts)

    def _count_commit(self, *, durable: bool, units: int) -> None:
        with self._counts_guard:
            self._counts["durable" if durable else "light"] += 1
            self._counts["units"] += units

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
        with self._write_lock, self._process_lock():
            try:
                self._set_synchronous_txn(conn, durable=durable)
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._unavailable(exc, unavailable) from exc
            try:
                yield conn
                conn.execute("COMMIT")
                self._count_commit(durable=durable, units=1)
            except BaseException as exc:
                self._rollback(conn)
                if _is_unavailable(exc):
                    raise self._unavailable(exc, unavailable) from exc
                raise

    def run_write(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        durable: bool,
        unavailable: type[InfrastructureError] = StoreUnavailable,
    ) -> T:
        """Run ``work`` in a write transaction, group-committed with concurrent callers.

        ``work`` runs inside a savepoint of a ``BEGIN IMMEDIATE`` transaction, possibly
        on another thread's connection; if it raises, its writes are rolled back and the
        exception is re-raised here, while the rest of the group commits. It must only
        issue SQL on the connection it is given (never call back into this database).
        Returns once the transaction holding the work has committed.

        Args:
            work: The statements to run; its return value is returned.
            durable: As for :meth:`write_transaction`; a group containing one durable
                unit commits with an fsync.
            unavailable: The error raised when SQLite is locked or failing.

        Raises:
            StoreUnavailable: (or ``unavailable``) the database stayed locked past the
                busy timeout or failed with an I/O error; nothing was written.
        """
        item = _Write(work, durable, unavailable)
        with self._group:
            self._pending.append(item)
            while self._has_leader and not item.is_done:
                self._group.wait()
            is_leader = not item.is_done
            if is_leader:
                self._has_leader = True
                batch, self._pending = self._pending, []
        # The leader's commit takes an fsync; meanwhile new callers queue up in _pending
        # and the next leader commits all of them at once. One fsync per group instead of
        # one per call is what lets 32 workers outrun a single-row commit loop.
        if is_leader:
            try:
                self._commit_group(batch)
            finally:
                with self._group:
                    self._has_leader = False
                    self._group.notify_all()
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

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
        with self._write_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<db>.lock`` for one write transaction.

        Several processes (``relay dev`` workers) write the same file. Without this they
        meet in SQLite's busy handler, which *sleeps and polls* (1, 2, 5 … 100 ms), so a
        writer often sleeps long after the lock was freed. ``flock`` blocks in the kernel
        and wakes the next writer as soon as the lock is released. SQLite's own locking
        still guards correctness; this only orders the writers.
        """
        if self._lock_fd is None:
            self._lock_fd = os.open(self._path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

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
            create_schema_txn(txn, self._path)

    def _commit_group(self, batch: list[_Write]) -> None:
        """Run every unit of ``batch`` in one transaction, each in its own savepoint."""
        try:
            conn = self.connection()
            with self._write_lock, self._process_lock():
                is_durable = any(w.durable for w in batch)
                self._set_synchronous_txn(conn, durable=is_durable)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for item in batch:
                        _run_in_savepoint_txn(conn, item)
                    conn.execute("COMMIT")
                    self._count_commit(durable=is_durable, units=len(batch))
                except BaseException:
                    self._rollback(conn)
                    raise
        except BaseException as exc:
            # The transaction is gone: every unit that had not failed on its own fails now.
            for item in batch:
                if item.error is None:
                    item.error = exc
                    if _is_unavailable(exc):
                        item.error = self._unavailable(exc, item.unavailable)
                        item.error.__cause__ = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for item in batch:
                item.is_done = True

    def _set_synchronous_txn(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        """Set ``synchronous`` for the next commit of this thread's connection, if needed."""
        wanted = "FULL" if durable else "NORMAL"
        if self._local.synchronous != wanted:
            conn.execute("PRAGMA synchronous=" + wanted)
            self._local.synchronous = wanted

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


def _run_in_savepoint_txn(conn: sqlite3.Connection, item: _Write) -> None:
    """Run one unit of work; roll back just its writes if it raises an ordinary error."""
    conn.execute("SAVEPOINT unit")
    try:
        item.result = item.work(conn)
    except Exception as exc:
        if _is_unavailable(exc):
            raise  # SQLite may have rolled back the whole transaction: fail the group.
        item.error = exc
        conn.execute("ROLLBACK TO unit")
    conn.execute("RELEASE unit")


def _is_unavailable(exc: BaseException) -> bool:
    """True for lock timeouts and I/O failures, not for bugs (misuse, constraint errors)."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError
