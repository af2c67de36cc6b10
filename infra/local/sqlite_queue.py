"""The embedded backend's task queue: a table in the same SQLite file as the state.

A message is a row from enqueue until ack; its primary key, the message id, is what
drops duplicate enqueues. Leasing hides a row by moving its ``visible_at`` into the
future, so an unacknowledged message comes back by itself when its lease runs out:

    enqueue          lease_due(now)            ack(receipt)
    visible_at=t0 -> visible_at=now+lease  -> row deleted
                     (worker dies: at now+lease the row is due again, delivery_count+1)
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.errors import QueueUnavailable
from core.ports.task_queue import Delivery
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_schema import INSERT_MESSAGE_SQL, message_row

_SELECT_DUE: Final = (
    "SELECT rowid, message_id, saga, run_id, step, action, attempt, not_before, delivery_count"
    " FROM queue WHERE visible_at <= ? ORDER BY visible_at, rowid LIMIT ?"
)
_MARK_LEASED: Final = (
    "UPDATE queue SET visible_at = ?, delivery_count = ?, receipt = ? WHERE rowid = ?"
)
_DELETE_BY_RECEIPT: Final = "DELETE FROM queue WHERE message_id = ? AND receipt = ?"
# Clearing the receipt makes the released delivery's receipt useless: a late ack from
# the worker that gave the message back must not delete its next delivery.
_RELEASE_BY_RECEIPT: Final = (
    "UPDATE queue SET visible_at = ?, receipt = NULL WHERE message_id = ? AND receipt = ?"
)
_RELEASE_ALL_LEASES: Final = (
    "UPDATE queue SET visible_at = ?, receipt = NULL WHERE receipt IS NOT NULL AND visible_at > ?"
)
_COUNT: Final = "SELECT COUNT(*) FROM queue"


class SQLiteTaskQueue:
    """A ``PullQueue`` over the ``queue`` table of a ``SQLiteDatabase``.

    Enqueues are durable (fsync'd); lease, ack and release are not, because losing one
    in a power cut only delivers a message again, which every worker tolerates.

    Args:
        database: The open database, usually shared with ``SQLiteStateStore``.
        clock: Epoch seconds; the enqueue time of messages without ``not_before`` and
            the base of ``release`` delays.
    """

    def __init__(self, database: SQLiteDatabase, *, clock: Callable[[], float] = time.time) -> None:
        self._db = database
        self._clock = clock

    @classmethod
    def from_settings(cls, data_dir: Path) -> SQLiteTaskQueue:
        """A queue on ``<data_dir>/relay.db``, created if missing."""
        return cls(SQLiteDatabase.from_settings(data_dir))

    @property
    def database(self) -> SQLiteDatabase:
        """The database holding the queue table."""
        return self._db

    def describe(self) -> Mapping[str, str]:
        """The database file, for logs and errors."""
        return self._db.describe()

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        """Durably enqueue ``messages``; ids already queued or leased are dropped.

        Raises:
            QueueUnavailable: the database is locked or failing; nothing was enqueued.
        """
        if not messages:
            return
        now = self._clock()
        rows = [message_row(message, now) for message in messages]
        self._db.run_write(
            lambda conn: conn.executemany(INSERT_MESSAGE_SQL, rows),
            durable=True,
            unavailable=QueueUnavailable,
        )

    def lease_due(self, *, now: float, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` messages due at ``now``, oldest first, hidden for a lease.

        Raises:
            QueueUnavailable: the database is locked or failing; nothing was leased.
        """
        if limit <= 0:
            return []
        visible_at = now + lease_seconds

        def lease_txn(conn: sqlite3.Connection) -> list[Delivery]:
            deliveries: list[Delivery] = []
            rows = conn.execute(_SELECT_DUE, (now, limit)).fetchall()
            if not rows:
                return deliveries
            updates = []
            for rowid, message_id, saga, run_id, step, action, attempt, not_before, leased in rows:
                count = leased + 1
                # The random part keeps receipts unique even when an acked id is
                # enqueued again and starts counting from one.
                receipt = f"{message_id}:{count}:{secrets.token_hex(6)}"
                updates.append((visible_at, count, receipt, rowid))
                message = Message(
                    RunId(run_id), StepName(step), Action(action), attempt, not_before, saga=saga
                )
                deliveries.append(Delivery(message=message, delivery_count=count, receipt=receipt))
            conn.executemany(_MARK_LEASED, updates)
            return deliveries

        return self._db.run_write(lease_txn, durable=False, unavailable=QueueUnavailable)

    def ack(self, *, receipts: Sequence[str]) -> None:
        """Delete the delivered messages in one transaction; stale receipts are ignored.

        Raises:
            QueueUnavailable: the database is locked or failing; nothing was deleted.
        """
        keys = [key for key in map(_receipt_key, receipts) if key is not None]
        if not keys:
            return
        self._db.run_write(
            lambda conn: conn.executemany(_DELETE_BY_RECEIPT, keys),
            durable=False,
            unavailable=QueueUnavailable,
        )

    def release(self, *, receipt: str, delay_seconds: float) -> None:
        """Make a leased message due again ``delay_seconds`` from now; stale receipts no-op.

        Raises:
            QueueUnavailable: the database is locked or failing; nothing changed.
        """
        key = _receipt_key(receipt)
        if key is None:
            return
        visible_at = self._clock() + delay_seconds
        self._db.run_write(
            lambda conn: conn.execute(_RELEASE_BY_RECEIPT, (visible_at, *key)),
            durable=False,
            unavailable=QueueUnavailable,
        )

    def release_all_leases(self) -> int:
        """Make every leased message due now; returns how many were leased.

        Only for a dispatcher starting on a database no other dispatcher uses (``relay
        dev``): leases held by a dispatcher that was killed would otherwise hide their
        messages until they expire. Delayed messages that were never leased keep their
        delay. A worker still running one of those deliveries is harmless: the step's own
        lease in the state store answers the redelivery with "retry later".

        Raises:
            QueueUnavailable: the database is locked or failing; nothing changed.
        """
        now = self._clock()
        cursor = self._db.run_write(
            lambda conn: conn.execute(_RELEASE_ALL_LEASES, (now, now)),
            durable=False,
            unavailable=QueueUnavailable,
        )
        return int(cursor.rowcount)

    def pending_count(self) -> int:
        """Messages queued or leased."""
        with self._db.read_transaction(unavailable=QueueUnavailable) as conn:
            row = conn.execute(_COUNT).fetchone()
        return int(row[0])


def _receipt_key(receipt: str) -> tuple[str, str] | None:
    """``(message_id, receipt)`` for a receipt ``<message_id>:<count>:<token>``, or None.

    The message id leads the key so deletes go through the primary key, with no index on
    the receipt column to maintain on every lease.
    """
    parts = receipt.rsplit(":", 2)
    if len(parts) != 3:
        return None
    return parts[0], receipt
