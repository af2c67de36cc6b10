"""Guarantees specific to the embedded SQLite backend, beyond the shared port contracts."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.domain.records import Message, RunId, RunRecord, StateChange, StepName, StepRecord
from core.domain.status import Action, RunStatus
from core.errors import ConcurrencyConflict, ConfigurationError, QueueUnavailable, StoreUnavailable
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_schema import (
    _SCHEMA_V1,
    INSERT_MESSAGE_SQL,
    SCHEMA_VERSION,
    message_row,
)
from infra.local.sqlite_store import SQLiteStateStore

T0 = 1_700_000_000.0


def message(step: str) -> Message:
    return Message(RunId("r-1"), StepName(step), Action.EXECUTE, 1)


def insert_txn(step: str, fail: bool = False) -> Callable[[sqlite3.Connection], str]:
    def work(conn: sqlite3.Connection) -> str:
        conn.execute(INSERT_MESSAGE_SQL, message_row(message(step), T0))
        if fail:
            raise ValueError(step)
        return step

    return work


def test_group_commit_rolls_back_only_the_failing_unit(sqlite_database: SQLiteDatabase) -> None:
    """Units committed together keep their own atomicity: a failing unit's writes vanish."""
    release_leader = threading.Event()
    results: dict[str, object] = {}

    def slow_leader(conn: sqlite3.Connection) -> None:
        # Hold the first transaction open so the other units pile up into one group.
        release_leader.wait(5)

    def run(step: str, fail: bool) -> None:
        try:
            results[step] = sqlite_database.run_write(insert_txn(step, fail), durable=True)
        except ValueError as exc:
            results[step] = exc

    leader = threading.Thread(target=lambda: sqlite_database.run_write(slow_leader, durable=True))
    leader.start()
    time.sleep(0.05)
    followers = [threading.Thread(target=run, args=(f"s{i}", i % 2 == 1)) for i in range(8)]
    for thread in followers:
        thread.start()
    time.sleep(0.1)
    release_leader.set()
    for thread in [leader, *followers]:
        thread.join()

    queue = SQLiteTaskQueue(sqlite_database)
    leased = {d.message.step for d in queue.lease_due(now=T0, limit=100, lease_seconds=1)}
    assert leased == {"s0", "s2", "s4", "s6"}
    assert all(isinstance(results[f"s{i}"], ValueError) for i in (1, 3, 5, 7))
    assert [results[f"s{i}"] for i in (0, 2, 4, 6)] == ["s0", "s2", "s4", "s6"]


def test_many_threads_applying_to_their_own_runs_all_commit(
    sqlite_database: SQLiteDatabase,
) -> None:
    """Thirty-two threads each driving their own run through claims and commits all succeed."""
    store = SQLiteStateStore(sqlite_database, clock=lambda: T0)
    errors: list[BaseException] = []

    def drive(index: int) -> None:
        try:
            run_id = RunId(f"r-{index}")
            run = RunRecord(run_id, "order", RunStatus.RUNNING, {}, "h", T0, T0)
            step = StepRecord(run_id, StepName("only"))
            store.create_run(run=run, steps=[step], outbox=[])
            for _ in range(10):
                step = step.claimed(now=T0, lease_until=T0 + 30, error=None)
                store.apply(change=StateChange(run_id, steps=(step,)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for index in range(32):
        snapshot = store.load_run(run_id=RunId(f"r-{index}"))
        assert snapshot is not None
        assert snapshot.step("only").version == 11


def test_conflict_in_a_group_does_not_fail_its_neighbours(
    sqlite_database: SQLiteDatabase,
) -> None:
    """Racing claims on one step next to unrelated writes: the unrelated writes all commit."""
    store = SQLiteStateStore(sqlite_database, clock=lambda: T0)
    run = RunRecord(RunId("r-1"), "order", RunStatus.RUNNING, {}, "h", T0, T0)
    steps = [StepRecord(RunId("r-1"), StepName(f"s{i}")) for i in range(10)]
    store.create_run(run=run, steps=steps, outbox=[])
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def claim(name: str) -> None:
        barrier.wait()
        step = StepRecord(RunId("r-1"), StepName(name)).claimed(
            now=T0, lease_until=T0 + 30, error=None
        )
        try:
            store.apply(change=StateChange(RunId("r-1"), steps=(step,)))
            outcomes.append(f"ok:{name}")
        except ConcurrencyConflict:
            outcomes.append(f"conflict:{name}")

    names = ["s0"] * 11 + [f"s{i}" for i in range(1, 10)]
    threads = [threading.Thread(target=claim, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(o for o in outcomes if not o.startswith("ok:s0")) == sorted(
        [f"ok:s{i}" for i in range(1, 10)] + ["conflict:s0"] * 10
    )
    assert outcomes.count("ok:s0") == 1


def test_locked_database_raises_store_and_queue_unavailable(tmp_path: Path) -> None:
    """A write lock held by another process past the busy timeout is a retryable error."""
    database = SQLiteDatabase(tmp_path / "relay.db", busy_timeout_seconds=0.05)
    other = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        store = SQLiteStateStore(database)
        queue = SQLiteTaskQueue(database)
        run = RunRecord(RunId("r-1"), "order", RunStatus.PENDING, {}, "h", T0, T0)

        with pytest.raises(StoreUnavailable, match=r"relay\.db") as store_error:
            store.create_run(run=run, steps=[], outbox=[])
        with pytest.raises(QueueUnavailable) as queue_error:
            queue.enqueue(messages=[message("a")])

        assert isinstance(store_error.value.__cause__, sqlite3.OperationalError)
        assert isinstance(queue_error.value.__cause__, sqlite3.OperationalError)
        assert store_error.value.retryable
        other.execute("ROLLBACK")
        assert store.create_run(run=run, steps=[], outbox=[]) == (run, True)
    finally:
        other.close()
        database.close()


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    """Everything committed is there after the database is closed and opened again."""
    first = SQLiteStateStore.from_settings(tmp_path / "data")
    run = RunRecord(RunId("r-1"), "order", RunStatus.PENDING, {"a": 1}, "h", T0, T0)
    first.create_run(run=run, steps=[StepRecord(run.run_id, StepName("s"))], outbox=[message("s")])
    first.database.close()

    second = SQLiteStateStore.from_settings(tmp_path / "data")
    try:
        snapshot = second.load_run(run_id=run.run_id)
        assert snapshot is not None
        assert snapshot.run == run
        assert SQLiteTaskQueue(second.database).pending_count() == 1
        assert second.describe() == {
            "backend": "local",
            "path": str(tmp_path / "data" / "relay.db"),
        }
    finally:
        second.database.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """A file written by a newer schema is not silently used with the old layout."""
    SQLiteDatabase(tmp_path / "relay.db").close()
    raw = sqlite3.connect(tmp_path / "relay.db")
    with raw:
        raw.execute("INSERT INTO schema_version (version) VALUES (99)")
    raw.close()

    with pytest.raises(ConfigurationError, match="schema version 99"):
        SQLiteDatabase(tmp_path / "relay.db")


def test_a_version_1_file_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    """A file written before the sweeper's back-off columns opens, migrates, and stays usable."""
    raw = sqlite3.connect(tmp_path / "relay.db")
    with raw:
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version (version) VALUES (1)")
        for statement in _SCHEMA_V1:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO runs VALUES ('r-1', 'order', 'RUNNING', '{}', 'null', NULL, 'h',"
            " NULL, ?, ?, 0, 4)",
            (T0, T0 + 1),
        )
    raw.close()

    store = SQLiteStateStore(SQLiteDatabase(tmp_path / "relay.db"))
    try:
        snapshot = store.load_run(run_id=RunId("r-1"))
        assert snapshot is not None
        assert (snapshot.run.version, snapshot.run.redrive_count, snapshot.run.redriven_at) == (
            4,
            0,
            None,
        )
        redriven = snapshot.run.redriven(now=T0 + 60)
        store.apply(change=StateChange(RunId("r-1"), run=redriven))
        assert store.list_runs() == [redriven]
        versions = store.database.connection().execute("SELECT version FROM schema_version")
        assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        store.database.close()


def test_closed_database_refuses_new_connections(tmp_path: Path) -> None:
    """Using a database after close is a clear error, not a leaked connection."""
    database = SQLiteDatabase(tmp_path / "relay.db")
    database.close()
    database.close()

    with pytest.raises(RuntimeError, match="closed"):
        SQLiteStateStore(database).load_run(run_id=RunId("r-1"))


def test_release_all_leases_makes_leased_messages_due_but_keeps_delays(tmp_path: Path) -> None:
    """Leases of a dead dispatcher are handed back; delayed, never-leased messages stay delayed."""
    now = [1000.0]
    database = SQLiteDatabase(tmp_path / "relay.db")
    queue = SQLiteTaskQueue(database, clock=lambda: now[0])
    leased = Message(RunId("r1"), StepName("a"), Action.EXECUTE, 1)
    delayed = Message(RunId("r1"), StepName("b"), Action.EXECUTE, 1, not_before=5000.0)
    queue.enqueue(messages=[leased, delayed])
    assert [d.message for d in queue.lease_due(now=now[0], limit=10, lease_seconds=60)] == [leased]
    assert queue.lease_due(now=now[0], limit=10, lease_seconds=60) == []
    assert queue.release_all_leases() == 1
    again = queue.lease_due(now=now[0], limit=10, lease_seconds=60)
    assert [d.message for d in again] == [leased] and again[0].delivery_count == 2
    database.close()


def test_a_version_1_file_is_migrated_and_its_queued_messages_still_load(tmp_path: Path) -> None:
    """A data dir from before messages named their saga opens, its rows intact and usable."""
    from infra.local.sqlite_schema import _SCHEMA_V1

    raw = sqlite3.connect(tmp_path / "relay.db")
    with raw:
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version (version) VALUES (1)")
        for statement in _SCHEMA_V1:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO runs VALUES ('r-1', 'order', 'COMPENSATING', '{}', 'null', 'boom',"
            " 'h', NULL, ?, ?, 0, 3)",
            (T0, T0),
        )
        raw.execute(
            "INSERT INTO steps VALUES ('r-1', 'charge', 'SUCCEEDED', 1, 0, NULL, NULL, '1',"
            " NULL, ?, ?, ?, 3)",
            (T0, T0, T0),
        )
        raw.execute(
            "INSERT INTO queue (message_id, run_id, step, action, attempt, not_before,"
            " visible_at, enqueued_at) VALUES ('r-1/charge/compensate/2', 'r-1', 'charge',"
            " 'compensate', 2, NULL, ?, ?)",
            (T0, T0),
        )
    raw.close()

    database = SQLiteDatabase(tmp_path / "relay.db")
    try:
        queue = SQLiteTaskQueue(database, clock=lambda: T0)
        store = SQLiteStateStore(database, clock=lambda: T0)
        (legacy,) = queue.lease_due(now=T0, limit=10, lease_seconds=60)
        assert legacy.message == Message(RunId("r-1"), StepName("charge"), Action.COMPENSATE, 2)
        assert legacy.message.saga is None
        snapshot = store.load_run(run_id=RunId("r-1"))
        assert snapshot is not None
        assert (snapshot.run.error, snapshot.run.compensation_reason) == ("boom", None)
        assert snapshot.run.error_detail is None  # written before the detail existed
        charge = snapshot.step("charge")
        assert (charge.attempt, charge.compensation_attempts, charge.version) == (1, 0, 3)
        undoing = charge.compensation_claimed(now=T0, lease_until=T0 + 30)
        store.apply(change=StateChange(RunId("r-1"), steps=(undoing,)))
        named = Message(RunId("r-1"), StepName("charge"), Action.COMPENSATE, 3, saga="order")
        queue.enqueue(messages=[named])
        assert [d.message for d in queue.lease_due(now=T0, limit=10, lease_seconds=60)] == [named]
        reloaded = store.load_run(run_id=RunId("r-1"))
        assert reloaded is not None and reloaded.step("charge") == undoing
    finally:
        database.close()
    raw = sqlite3.connect(tmp_path / "relay.db")
    try:
        assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone() == (
            SCHEMA_VERSION,
        )
    finally:
        raw.close()
    SQLiteDatabase(tmp_path / "relay.db").close()  # opening a migrated file again is a no-op
