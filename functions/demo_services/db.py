"""The demo services' own SQLite file: connections, schema, seed catalogue and transactions.

This is a demo stand-in for the databases behind external services (a warehouse, a payment
provider, a mail relay), so it lives in its own file, ``<RELAY_DATA_DIR>/demo.db``, and is
never part of Relay's run state. Several worker processes share it: every service operation
is one ``BEGIN IMMEDIATE`` transaction, so it is atomic across threads and processes, and
every operation is keyed by the caller's idempotency key so that at-least-once delivery of
saga steps never applies an effect twice.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError, NonRetryableStepError

DB_FILE_NAME = "demo.db"
INITIAL_STOCK = 1_000_000
"""Units of every SKU at seeding: enough that chaos campaigns never run out by accident."""

BUSY_TIMEOUT_SECONDS = 30.0
SCHEMA_VERSION = 2  # 2: charges keep the payment token, not card digits


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One product the demo shop sells, as seeded."""

    sku: str
    name: str
    price_cents: int


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry("SKU-BOOK", "Paperback book", 1_499),
    CatalogueEntry("SKU-MUG", "Ceramic mug", 899),
    CatalogueEntry("SKU-SHIRT", "Cotton T-shirt", 2_450),
    CatalogueEntry("SKU-LAMP", "Desk lamp", 4_999),
    CatalogueEntry("SKU-PEN", "Fountain pen", 12_000),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    price_cents   INTEGER NOT NULL CHECK (price_cents > 0),
    initial_stock INTEGER NOT NULL,
    stock         INTEGER NOT NULL CHECK (stock >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    key         TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'released', 'voided')),
    created_at  REAL NOT NULL,
    released_at REAL
);
CREATE TABLE IF NOT EXISTS reservation_lines (
    key      TEXT NOT NULL REFERENCES reservations (key),
    sku      TEXT NOT NULL REFERENCES products (sku),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (key, sku)
);
CREATE TABLE IF NOT EXISTS charges (
    key          TEXT PRIMARY KEY,
    charge_id    TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
    payment_token TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('charged', 'refunded', 'voided')),
    created_at   REAL NOT NULL,
    refunded_at  REAL
);
CREATE TABLE IF NOT EXISTS validations (
    key         TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('valid', 'withdrawn', 'voided')),
    created_at  REAL NOT NULL,
    voided_at   REAL
);
CREATE TABLE IF NOT EXISTS orders (
    key             TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    customer_id     TEXT NOT NULL,
    total_cents     INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    lines_json      TEXT NOT NULL,
    payment_key     TEXT NOT NULL,
    reservation_key TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('created', 'cancelled', 'voided')),
    created_at      REAL NOT NULL,
    cancelled_at    REAL
);
CREATE TABLE IF NOT EXISTS emails (
    key        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('sent', 'suppressed')),
    created_at REAL NOT NULL,
    PRIMARY KEY (key, kind)
);
CREATE TABLE IF NOT EXISTS users (
    key            TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    email          TEXT NOT NULL,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'deactivated', 'voided')),
    created_at     REAL NOT NULL,
    deactivated_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_active_email ON users (email) WHERE status = 'active';
CREATE TABLE IF NOT EXISTS journal (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    service TEXT NOT NULL,
    action  TEXT NOT NULL,
    key     TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_by_key ON journal (key);
"""

_TABLES = (
    "journal",
    "users",
    "emails",
    "orders",
    "validations",
    "charges",
    "reservation_lines",
    "reservations",
    "products",
)


class ServiceUnavailable(Exception):
    """Raised when the demo database stays locked or fails; the step should retry later."""

    def __init__(self, *, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"demo services database {path} is unavailable: {reason}")


class IdempotencyKeyReused(NonRetryableStepError):
    """Raised when a key already names an operation with different arguments.

    A retry of the same step sends the same arguments, so a mismatch is a bug in the
    caller (two operations sharing one key); retrying cannot fix it.
    """

    def __init__(self, *, service: str, key: str, detail: str) -> None:
        self.service = service
        self.key = key
        super().__init__(f"{service}: key {key!r} was already used for {detail}")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One state change a demo service made, in commit order (``seq``)."""

    seq: int
    at: float
    service: str
    action: str
    key: str
    detail: str


@dataclass(slots=True)
class _Cached:
    conn: sqlite3.Connection
    path: Path
    pid: int
    generation: int


_local = threading.local()
_guard = threading.Lock()
_open: list[sqlite3.Connection] = []
_open_pid = os.getpid()
_generation = 0
# Threads of one process queue on this lock instead of on SQLite's busy handler, which
# sleeps and polls; other processes still meet us through busy_timeout.
_write_locks: dict[Path, threading.Lock] = {}


def database_path() -> Path:
    """Where the demo database lives: ``<RELAY_DATA_DIR>/demo.db`` (``.relay`` by default).

    Read on every call (it is one environment lookup) so tests can point the services at
    a temporary directory without restarting anything.
    """
    data_dir = Path(os.environ.get("RELAY_DATA_DIR", ".relay") or ".relay")
    return (data_dir / DB_FILE_NAME).absolute()


def connection() -> sqlite3.Connection:
    """This thread's connection to the demo database, opened (and schema-checked) on first use."""
    path = database_path()
    pid = os.getpid()
    cached: _Cached | None = getattr(_local, "cached", None)
    if cached is not None:
        if cached.path == path and cached.pid == pid and cached.generation == _generation:
            return cached.conn
        if cached.pid == pid and cached.generation == _generation:
            _forget(cached.conn)
    conn = _open_connection(path)
    _local.cached = _Cached(conn, path, pid, _generation)
    return conn


@contextmanager
def transaction() -> Iterator[sqlite3.Connection]:
    """Run the body as one ``BEGIN IMMEDIATE`` transaction; roll back if it raises.

    Taking the write lock up front means a read-check-write sequence inside the body (the
    shape of every idempotent operation here) cannot interleave with another process's.

    Raises:
        ServiceUnavailable: the database stayed locked past the busy timeout or failed.
    """
    conn = connection()
    path = database_path()
    with _write_lock(path):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise ServiceUnavailable(path=path, reason=str(exc)) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback(conn)
            raise ServiceUnavailable(path=path, reason=str(exc)) from exc
        except BaseException:
            _rollback(conn)
            raise


@contextmanager
def reading() -> Iterator[sqlite3.Connection]:
    """Run several reads against one consistent snapshot (a deferred read transaction)."""
    conn = connection()
    try:
        conn.execute("BEGIN")
    except sqlite3.OperationalError as exc:
        raise ServiceUnavailable(path=database_path(), reason=str(exc)) from exc
    try:
        yield conn
    finally:
        _rollback(conn)


def record_txn(
    conn: sqlite3.Connection, *, service: str, action: str, key: str, detail: str
) -> None:
    """Append to the journal inside the caller's transaction, so it commits with the change."""
    conn.execute(
        "INSERT INTO journal (at, service, action, key, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time(), service, action, key, detail),
    )


def record_void(
    conn: sqlite3.Connection,
    *,
    service: str,
    table: str,
    row: Mapping[str, object],
    action: str,
    detail: str,
) -> None:
    """Insert a void marker row and journal it, inside the caller's transaction.

    An undo that finds nothing to undo leaves a marker under the key, so the forward call
    arriving late (an attempt that overran its timeout) finds the key used and refuses,
    instead of acting after the saga gave up. ``table`` and the column names are this
    module's own constants, never input, which is why they may be formatted into SQL.
    """
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))
    record_txn(conn, service=service, action=action, key=str(row["key"]), detail=detail)


def journal(key_prefix: str | None = None) -> list[JournalEntry]:
    """State changes in commit order, optionally only for keys starting with ``key_prefix``.

    ``key_prefix=f"{run_id}:"`` gives everything one saga run did to the outside world,
    which is what ``relay demo`` prints and what tests use to check compensation order.
    """
    sql = "SELECT seq, at, service, action, key, detail FROM journal"
    params: tuple[str, ...] = ()
    if key_prefix:
        sql += " WHERE key >= ? AND key < ?"
        params = key_range(key_prefix)
    with reading() as conn:
        rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
    return [JournalEntry(*row) for row in rows]


def key_range(prefix: str) -> tuple[str, str]:
    """Bounds ``(low, high)`` such that ``low <= key < high`` iff ``key`` starts with ``prefix``.

    Lets prefix queries use the primary-key index instead of ``LIKE`` with escaping.
    """
    if not prefix:
        raise ValueError("key prefix must not be empty")
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def stable_id(kind: str, *parts: str) -> str:
    """A deterministic id for the object an idempotency key creates (same key, same id)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]
    return f"{kind}_{digest}"


def reset() -> None:
    """Delete every row and re-seed the catalogue with full stock (tests and demos)."""
    with transaction() as conn:
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'journal'")
        _seed_txn(conn)


def close_all() -> None:
    """Close every connection this process opened; the next call opens fresh ones.

    Tests call it on teardown (``filterwarnings = error`` turns an unclosed connection into
    a failure) and it is safe to call while no operation is in flight.
    """
    global _generation, _open_pid
    with _guard:
        if _open_pid == os.getpid():
            for conn in _open:
                conn.close()
        _open.clear()
        _open_pid = os.getpid()
        _generation += 1
    _local.cached = None


def _open_connection(path: Path) -> sqlite3.Connection:
    global _open_pid
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False only so close_all() can close other threads' connections;
    # each connection is still used by the one thread that opened it.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL survives a killed process (chaos kills workers), which is all a demo needs.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _ensure_schema(conn, path)
    except sqlite3.OperationalError as exc:
        conn.close()
        raise ServiceUnavailable(path=path, reason=str(exc)) from exc
    except BaseException:
        conn.close()
        raise
    with _guard:
        if _open_pid != os.getpid():  # forked: the parent's connections are not ours
            _open.clear()
            _open_pid = os.getpid()
        _open.append(conn)
    return conn


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create and seed the schema once per file, safely when processes race to do it."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    with _write_lock(path):
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found not in (0, SCHEMA_VERSION):
                raise ConfigurationError(
                    f"{path} holds demo data of schema version {found}, this code uses "
                    f"{SCHEMA_VERSION}; it is throwaway demo data: delete the file and retry"
                )
            if found != SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                _seed_txn(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise


def _seed_txn(conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO products (sku, name, price_cents, initial_stock, stock) "
        "VALUES (?, ?, ?, ?, ?)",
        [(p.sku, p.name, p.price_cents, INITIAL_STOCK, INITIAL_STOCK) for p in CATALOGUE],
    )


def _write_lock(path: Path) -> threading.Lock:
    with _guard:
        return _write_locks.setdefault(path, threading.Lock())


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _forget(conn: sqlite3.Connection) -> None:
    """Close a connection to a database this thread no longer uses (RELAY_DATA_DIR moved)."""
    with _guard:
        if conn in _open:
            _open.remove(conn)
    conn.close()
