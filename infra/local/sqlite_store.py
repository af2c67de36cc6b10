"""The embedded backend's state store: run headers and step records in SQLite.

Every mutation is one durable ``BEGIN IMMEDIATE`` transaction whose ``UPDATE ... WHERE
version = ?`` statements are the compare-and-set; the outbox is inserted into the queue
table of the same file in that same transaction, so ``delivers_outbox`` is True.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from core.domain.audit import audit_from_json, audit_to_json
from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.status import RunStatus, StepStatus
from core.errors import ConcurrencyConflict
from core.ports.state_store import check_run_ids
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_schema import INSERT_MESSAGE_SQL, message_row


def _placeholders(columns: str) -> str:
    """One ``?`` per column of a comma-separated column list."""
    return ", ".join("?" * (columns.count(",") + 1))


_RUN_COLUMNS: Final = (
    "run_id, saga, status, input, output, error, definition_hash, idempotency_key,"
    " created_at, updated_at, is_cancel_requested, version, compensation_reason,"
    " redrive_count, redriven_at"
    ", audit"  # schema version 4 (RunRecord.audit)
    ", error_detail"
)
_STEP_COLUMNS: Final = (
    "run_id, name, status, attempt, budget_start, lease_until, retry_at, output, error,"
    " started_at, finished_at, updated_at, version, compensation_attempts"
    ", error_detail"
)

_INSERT_RUN: Final = (
    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({_placeholders(_RUN_COLUMNS)})"
    " ON CONFLICT (run_id) DO NOTHING"
)
# The set list omits run_id, saga and created_at: they never change after creation.
_UPDATE_RUN: Final = (
    "UPDATE runs SET status = ?, input = ?, output = ?, error = ?, definition_hash = ?,"
    " idempotency_key = ?, updated_at = ?, is_cancel_requested = ?, version = ?,"
    " compensation_reason = ?, redrive_count = ?, redriven_at = ?"
    ", audit = ?"
    ", error_detail = ?"
    " WHERE run_id = ? AND version = ?"
)
_SELECT_RUN: Final = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?"
_SELECT_RUN_VERSION: Final = "SELECT version FROM runs WHERE run_id = ?"

_INSERT_STEP: Final = f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES ({_placeholders(_STEP_COLUMNS)})"
_UPDATE_STEP: Final = (
    "UPDATE steps SET status = ?, attempt = ?, budget_start = ?, lease_until = ?,"
    " retry_at = ?, output = ?, error = ?, started_at = ?, finished_at = ?, updated_at = ?,"
    " version = ?, compensation_attempts = ?"
    ", error_detail = ?"
    " WHERE run_id = ? AND name = ? AND version = ?"
)
_SELECT_STEPS: Final = f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY name"
_SELECT_STEP_VERSION: Final = "SELECT version FROM steps WHERE run_id = ? AND name = ?"

_COUNT_BY_STATUS: Final = "SELECT status, COUNT(*) FROM runs GROUP BY status"
_COUNT_BY_STATUS_FOR_SAGA: Final = (
    "SELECT status, COUNT(*) FROM runs WHERE saga = ? GROUP BY status"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SQLiteStateStore:
    """A ``StateStore`` in a local SQLite file, sharing the file with ``SQLiteTaskQueue``.

    Args:
        database: The open database (see ``SQLiteDatabase``); its queue table receives
            the outbox.
        clock: Epoch seconds, stamped on outbox messages as their enqueue time.
    """

    def __init__(self, database: SQLiteDatabase, *, clock: Callable[[], float] = time.time) -> None:
        self._db = database
        self._clock = clock

    @classmethod
    def from_settings(cls, data_dir: Path) -> SQLiteStateStore:
        """A store on ``<data_dir>/relay.db``, created if missing."""
        return cls(SQLiteDatabase.from_settings(data_dir))

    @property
    def database(self) -> SQLiteDatabase:
        """The database this store writes to; share it with the task queue, close it last."""
        return self._db

    @property
    def delivers_outbox(self) -> bool:
        """True: outbox messages are inserted into the queue table in the same transaction."""
        return True

    def describe(self) -> Mapping[str, str]:
        """The database file, for logs and errors."""
        return self._db.describe()

    def create_run(
        self, *, run: RunRecord, steps: Sequence[StepRecord], outbox: Sequence[Message]
    ) -> tuple[RunRecord, bool]:
        """Create a run with its step records and first messages, unless it exists.

        Returns:
            The stored header and whether this call created it.

        Raises:
            ConcurrencyConflict: a step record of this run id exists without its header.
            StoreUnavailable: the database is locked or failing; nothing was written.
        """
        check_run_ids(run.run_id, [run], steps)
        run_row = _run_row(run)
        step_rows = [_step_row(step) for step in steps]
        now = self._clock()
        message_rows = [message_row(message, now) for message in outbox]

        def create_run_txn(conn: sqlite3.Connection) -> tuple[RunRecord, bool]:
            if conn.execute(_INSERT_RUN, run_row).rowcount == 0:
                stored = conn.execute(_SELECT_RUN, (run.run_id,)).fetchone()
                return _run_from_row(stored), False
            try:
                conn.executemany(_INSERT_STEP, step_rows)
            except sqlite3.IntegrityError as exc:
                raise ConcurrencyConflict(
                    run_id=run.run_id, detail=f"step records exist without a run header ({exc})"
                ) from exc
            if message_rows:
                conn.executemany(INSERT_MESSAGE_SQL, message_rows)
            return run, True

        return self._db.run_write(create_run_txn, durable=True)

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        """Read a run header and all its step records (ordered by name) in one snapshot."""
        with self._db.read_transaction() as conn:
            row = conn.execute(_SELECT_RUN, (run_id,)).fetchone()
            if row is None:
                return None
            step_rows = conn.execute(_SELECT_STEPS, (run_id,)).fetchall()
        steps = {StepName(r[1]): _step_from_row(r) for r in step_rows}
        return RunSnapshot(run=_run_from_row(row), steps=steps)

    def apply(self, *, change: StateChange) -> None:
        """Write ``change`` atomically if every version precondition holds.

        Raises:
            ConcurrencyConflict: a record or check no longer matches; nothing was written.
            StoreUnavailable: the database is locked or failing; nothing was written.
        """
        run_id = change.run_id
        check_run_ids(run_id, [change.run] if change.run is not None else [], change.steps)
        # Serialise before taking the write lock: JSON encoding is the slow part.
        run_params = _run_update_params(change.run) if change.run is not None else None
        step_params = [
            (step, _step_row(step) if step.version == 1 else _step_update_params(step))
            for step in change.steps
        ]
        now = self._clock()
        message_rows = [message_row(message, now) for message in change.outbox]

        def apply_txn(conn: sqlite3.Connection) -> None:
            if run_params is not None and conn.execute(_UPDATE_RUN, run_params).rowcount != 1:
                found = conn.execute(_SELECT_RUN_VERSION, (run_id,)).fetchone()
                raise _conflict(run_id, "run header", run_params[-1], found)
            for step, params in step_params:
                if step.version == 1:
                    try:
                        conn.execute(_INSERT_STEP, params)
                    except sqlite3.IntegrityError:
                        found = conn.execute(_SELECT_STEP_VERSION, (run_id, step.name)).fetchone()
                        raise _conflict(run_id, f"step {step.name!r}", 0, found) from None
                elif conn.execute(_UPDATE_STEP, params).rowcount != 1:
                    found = conn.execute(_SELECT_STEP_VERSION, (run_id, step.name)).fetchone()
                    raise _conflict(run_id, f"step {step.name!r}", step.version - 1, found)
            for check in change.checks:
                row = conn.execute(_SELECT_STEP_VERSION, (run_id, check.step)).fetchone()
                if row is None or row[0] != check.version:
                    raise _conflict(run_id, f"checked step {check.step!r}", check.version, row)
            if message_rows:
                conn.executemany(INSERT_MESSAGE_SQL, message_rows)

        self._db.run_write(apply_txn, durable=True)

    def list_runs(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Run headers, newest first (ties by run id, descending), filtered by saga/status."""
        if limit <= 0 or (statuses is not None and not statuses):
            return []
        where: list[str] = []
        params: list[Any] = []
        if saga is not None:
            where.append("saga = ?")
            params.append(saga)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(str(s) for s in statuses)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        params.append(limit)
        with self._db.read_transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_run_from_row(row) for row in rows]

    def count_runs_by_status(self, *, saga: str | None = None) -> Mapping[RunStatus, int]:
        """How many runs are in each status; every status is present, zero when unused."""
        with self._db.read_transaction() as conn:
            if saga is None:
                rows = conn.execute(_COUNT_BY_STATUS).fetchall()
            else:
                rows = conn.execute(_COUNT_BY_STATUS_FOR_SAGA, (saga,)).fetchall()
        counts = dict.fromkeys(RunStatus, 0)
        for status, count in rows:
            counts[RunStatus(status)] = count
        return counts


def _conflict(
    run_id: str, what: str, expected: int, found: tuple[Any, ...] | None
) -> ConcurrencyConflict:
    found_text = "no record" if found is None else f"version {found[0]}"
    expected_text = "no record" if expected == 0 else f"version {expected}"
    return ConcurrencyConflict(
        run_id=run_id, detail=f"{what}: expected {expected_text}, found {found_text}"
    )


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.run_id,
        run.saga,
        run.status.value,
        _dumps(run.input),
        _dumps(run.output),
        run.error,
        run.definition_hash,
        run.idempotency_key,
        run.created_at,
        run.updated_at,
        int(run.is_cancel_requested),
        run.version,
        run.compensation_reason,
        run.redrive_count,
        run.redriven_at,
        audit_to_json(run.audit),
        run.error_detail,
    )


def _run_update_params(run: RunRecord) -> tuple[Any, ...]:
    """``_UPDATE_RUN`` parameters; the last one is the version the update is fenced by."""
    return (
        run.status.value,
        _dumps(run.input),
        _dumps(run.output),
        run.error,
        run.definition_hash,
        run.idempotency_key,
        run.updated_at,
        int(run.is_cancel_requested),
        run.version,
        run.compensation_reason,
        run.redrive_count,
        run.redriven_at,
        audit_to_json(run.audit),
        run.error_detail,
        run.run_id,
        run.version - 1,
    )


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=RunId(row[0]),
        saga=row[1],
        status=RunStatus(row[2]),
        input=json.loads(row[3]),
        output=json.loads(row[4]),
        error=row[5],
        definition_hash=row[6],
        idempotency_key=row[7],
        created_at=row[8],
        updated_at=row[9],
        is_cancel_requested=bool(row[10]),
        version=row[11],
        compensation_reason=row[12],
        redrive_count=row[13],
        redriven_at=row[14],
        audit=audit_from_json(row[15]),
        error_detail=row[16],
    )


def _step_row(step: StepRecord) -> tuple[Any, ...]:
    return (
        step.run_id,
        step.name,
        step.status.value,
        step.attempt,
        step.budget_start,
        step.lease_until,
        step.retry_at,
        _dumps(step.output),
        step.error,
        step.started_at,
        step.finished_at,
        step.updated_at,
        step.version,
        step.compensation_attempts,
        step.error_detail,
    )


def _step_update_params(step: StepRecord) -> tuple[Any, ...]:
    return (
        step.status.value,
        step.attempt,
        step.budget_start,
        step.lease_until,
        step.retry_at,
        _dumps(step.output),
        step.error,
        step.started_at,
        step.finished_at,
        step.updated_at,
        step.version,
        step.compensation_attempts,
        step.error_detail,
        step.run_id,
        step.name,
        step.version - 1,
    )


def _step_from_row(row: tuple[Any, ...]) -> StepRecord:
    return StepRecord(
        run_id=RunId(row[0]),
        name=StepName(row[1]),
        status=StepStatus(row[2]),
        attempt=row[3],
        budget_start=row[4],
        lease_until=row[5],
        retry_at=row[6],
        output=json.loads(row[7]),
        error=row[8],
        started_at=row[9],
        finished_at=row[10],
        updated_at=row[11],
        version=row[12],
        compensation_attempts=row[13],
        error_detail=row[14],
    )
