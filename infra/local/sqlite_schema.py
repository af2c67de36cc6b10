"""The embedded backend's tables, and the queue-row helpers the store and the queue share.

Both the state store (its outbox) and the task queue insert queue rows, so the insert
statement lives here, next to the table it writes, rather than in either adapter.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from core.domain.records import Message
from core.errors import ConfigurationError

SCHEMA_VERSION: Final = 4
"""Bumped, with a migration step in ``_MIGRATIONS``, whenever a table changes."""

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

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: messages name their saga (NULL for rows enqueued before, which the worker
    # resolves from the run); steps count their compensation's attempts apart; a run
    # keeps why it compensates apart from its current error, and the sweeper's per-run
    # back-off (RunRecord.redrive_count, redriven_at).
    2: (
        "ALTER TABLE queue ADD COLUMN saga TEXT",
        "ALTER TABLE steps ADD COLUMN compensation_attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN compensation_reason TEXT",
        "ALTER TABLE runs ADD COLUMN redrive_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN redriven_at REAL",
    ),
    # 2 -> 3: the full, redacted error text beside the public one (issue 10); NULL for
    # rows written before, whose ``error`` is all there is.
    3: (
        "ALTER TABLE runs ADD COLUMN error_detail TEXT",
        "ALTER TABLE steps ADD COLUMN error_detail TEXT",
    ),
    # 3 -> 4: API keys of the run API (core/ports/api_keys.py; only a sha256 of each
    # secret is stored), and the runs' audit trail of operator actions (JSON text).
    4: (
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            grants TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
        "ALTER TABLE runs ADD COLUMN audit TEXT",
    ),
}
"""The statements that take a file from the version before each key to that version."""

INSERT_MESSAGE_SQL: Final = (
    "INSERT OR IGNORE INTO queue"
    " (message_id, saga, run_id, step, action, attempt, not_before, visible_at, enqueued_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""Enqueue one message unless a row with its id is still queued or leased (dedup)."""

MessageRow = tuple[str, str | None, str, str, str, int, float | None, float, float]


def message_row(message: Message, now: float) -> MessageRow:
    """The ``INSERT_MESSAGE_SQL`` parameters for ``message`` enqueued at ``now``."""
    visible_at = now if message.not_before is None else message.not_before
    return (
        message.message_id,
        message.saga,
        message.run_id,
        message.step,
        message.action.value,
        message.attempt,
        message.not_before,
        visible_at,
        now,
    )


def create_schema_txn(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables if the file is new, migrate an older file, refuse a newer one.

    A new file gets the version-1 tables and then every migration, so new and migrated
    files have the same layout. Runs in the caller's transaction: a migration that fails
    leaves the file as it was.

    Raises:
        ConfigurationError: the file's schema is newer than this code knows.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    found = row[0] if row is not None else None
    if found is not None and found > SCHEMA_VERSION:
        raise ConfigurationError(
            f"{path} has schema version {found}, newer than this Relay's {SCHEMA_VERSION}; "
            "upgrade Relay or point RELAY_DATA_DIR elsewhere"
        )
    if found == SCHEMA_VERSION:
        return
    if found is None:
        for statement in _SCHEMA_V1:
            conn.execute(statement)
        found = 1
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[version]:
            conn.execute(statement)
        # One row per version reached: the table is the file's migration history.
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
