"""The StateStore contract, run against every registered adapter (see conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    StateChange,
    StepName,
    StepRecord,
    VersionCheck,
)
from core.domain.status import Action, RunStatus, StepStatus
from core.errors import ConcurrencyConflict
from core.ports.state_store import StateStore
from core.ports.task_queue import PullQueue

T0 = 1_700_000_000.0
NOW = T0 + 10.0


def make_run(
    run_id: str = "r-1",
    *,
    saga: str = "order",
    status: RunStatus = RunStatus.PENDING,
    created_at: float = T0,
) -> RunRecord:
    return RunRecord(
        run_id=RunId(run_id),
        saga=saga,
        status=status,
        input={"order_id": run_id, "amount": 12.5},
        definition_hash="sha256:abc",
        created_at=created_at,
        updated_at=created_at,
    )


def make_steps(
    run_id: str = "r-1", names: Sequence[str] = ("reserve", "charge")
) -> list[StepRecord]:
    return [StepRecord(run_id=RunId(run_id), name=StepName(n), updated_at=T0) for n in names]


def claim(step: StepRecord, *, lease_until: float = NOW + 30) -> StepRecord:
    return step.claimed(now=NOW, lease_until=lease_until, error=None)


def execute(run_id: str, step: str, attempt: int = 1) -> Message:
    return Message(RunId(run_id), StepName(step), Action.EXECUTE, attempt)


def create(
    store: StateStore,
    run_id: str = "r-1",
    *,
    saga: str = "order",
    status: RunStatus = RunStatus.PENDING,
    created_at: float = T0,
) -> None:
    run = make_run(run_id, saga=saga, status=status, created_at=created_at)
    _, created = store.create_run(run=run, steps=make_steps(run_id), outbox=())
    assert created


def test_create_run_writes_header_and_steps(state_store: StateStore) -> None:
    """create_run stores the header and every step record, readable by load_run."""
    run, steps = make_run(), make_steps()

    stored, created = state_store.create_run(run=run, steps=steps, outbox=())

    assert (stored, created) == (run, True)
    snapshot = state_store.load_run(run_id=run.run_id)
    assert snapshot is not None
    assert snapshot.run == run
    assert dict(snapshot.steps) == {s.name: s for s in steps}


def test_create_run_twice_returns_existing_without_overwriting(state_store: StateStore) -> None:
    """A second create_run with the same id returns the stored header and writes nothing."""
    first = make_run()
    state_store.create_run(run=first, steps=make_steps(), outbox=())
    second = make_run(saga="other", status=RunStatus.RUNNING, created_at=T0 + 5)

    stored, created = state_store.create_run(
        run=second, steps=make_steps(names=("different",)), outbox=()
    )

    assert (stored, created) == (first, False)
    snapshot = state_store.load_run(run_id=first.run_id)
    assert snapshot is not None
    assert snapshot.run == first
    assert set(snapshot.steps) == {"reserve", "charge"}


def test_load_run_of_unknown_id_returns_none(state_store: StateStore) -> None:
    """Loading a run that was never created gives None, not an error."""
    assert state_store.load_run(run_id=RunId("nope")) is None


def test_apply_with_current_versions_writes_everything(state_store: StateStore) -> None:
    """A change whose records all follow the stored versions is written in full."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    run = snapshot.run.running(now=NOW)
    step = claim(snapshot.step("reserve"))

    state_store.apply(change=StateChange(run_id=run.run_id, run=run, steps=(step,)))

    after = state_store.load_run(run_id=run.run_id)
    assert after is not None
    assert after.run == run
    assert after.step("reserve") == step
    assert after.step("charge") == snapshot.step("charge")


def test_apply_with_stale_version_conflicts_and_writes_nothing(state_store: StateStore) -> None:
    """One stale record makes the whole change fail with ConcurrencyConflict, atomically."""
    create(state_store)
    before = state_store.load_run(run_id=RunId("r-1"))
    assert before is not None
    state_store.apply(
        change=StateChange(run_id=RunId("r-1"), steps=(claim(before.step("charge")),))
    )
    stale_charge = before.step("charge").skipped(now=NOW)
    run = before.run.running(now=NOW)
    reserve = claim(before.step("reserve"))
    middle = state_store.load_run(run_id=RunId("r-1"))

    with pytest.raises(ConcurrencyConflict) as info:
        state_store.apply(
            change=StateChange(run_id=run.run_id, run=run, steps=(reserve, stale_charge))
        )

    assert info.value.run_id == "r-1"
    assert "charge" in info.value.detail
    assert state_store.load_run(run_id=RunId("r-1")) == middle


def test_apply_with_failed_check_conflicts_and_writes_nothing(state_store: StateStore) -> None:
    """A read-set check on a changed step rejects the change, and nothing is written."""
    create(state_store)
    before = state_store.load_run(run_id=RunId("r-1"))
    assert before is not None
    state_store.apply(
        change=StateChange(run_id=RunId("r-1"), steps=(claim(before.step("reserve")),))
    )
    middle = state_store.load_run(run_id=RunId("r-1"))
    run = before.run.running(now=NOW)

    with pytest.raises(ConcurrencyConflict):
        state_store.apply(
            change=StateChange(
                run_id=run.run_id,
                run=run,
                steps=(claim(before.step("charge")),),
                checks=(VersionCheck(StepName("reserve"), before.step("reserve").version),),
            )
        )

    assert state_store.load_run(run_id=RunId("r-1")) == middle


def test_apply_with_passing_check_writes(state_store: StateStore) -> None:
    """A check that still matches lets the change through without writing the checked step."""
    create(state_store)
    before = state_store.load_run(run_id=RunId("r-1"))
    assert before is not None
    charge = claim(before.step("charge"))

    state_store.apply(
        change=StateChange(
            run_id=RunId("r-1"),
            steps=(charge,),
            checks=(VersionCheck(StepName("reserve"), before.step("reserve").version),),
        )
    )

    after = state_store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("charge") == charge
    assert after.step("reserve") == before.step("reserve")


def test_two_claims_from_the_same_snapshot_exactly_one_wins(state_store: StateStore) -> None:
    """Two workers claiming a step from the same read: the second claim conflicts."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    first = claim(snapshot.step("reserve"), lease_until=NOW + 30)
    second = claim(snapshot.step("reserve"), lease_until=NOW + 60)

    state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(first,)))
    with pytest.raises(ConcurrencyConflict):
        state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(second,)))

    after = state_store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("reserve") == first


def test_twenty_threads_racing_to_claim_a_step_exactly_one_wins(state_store: StateStore) -> None:
    """Twenty concurrent claims of one step from one snapshot: one commits, the rest conflict."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    outcomes: list[str] = []
    outcomes_lock = threading.Lock()

    def race(index: int) -> None:
        attempt = claim(snapshot.step("reserve"), lease_until=NOW + index)
        barrier.wait()
        try:
            state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(attempt,)))
            outcome = f"won:{index}"
        except ConcurrencyConflict:
            outcome = "conflict"
        with outcomes_lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [o for o in outcomes if o.startswith("won:")]
    assert len(outcomes) == threads_count
    assert len(winners) == 1
    after = state_store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("reserve").lease_until == NOW + int(winners[0].split(":")[1])
    assert after.step("reserve").version == 2


def test_commit_fenced_by_a_stale_claim_is_rejected(state_store: StateStore) -> None:
    """A worker whose lease was taken over cannot commit its result over the new claim."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    old_claim = claim(snapshot.step("reserve"))
    state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(old_claim,)))
    new_claim = claim(old_claim, lease_until=NOW + 120)
    state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(new_claim,)))
    late_commit = old_claim.succeeded(now=NOW, output={"ok": True})

    with pytest.raises(ConcurrencyConflict):
        state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(late_commit,)))

    after = state_store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("reserve") == new_claim


def test_new_step_record_for_existing_step_conflicts(state_store: StateStore) -> None:
    """A version-1 record is an insert: it conflicts when the step already exists."""
    create(state_store)
    duplicate = StepRecord(run_id=RunId("r-1"), name=StepName("reserve"), attempt=7, updated_at=NOW)

    with pytest.raises(ConcurrencyConflict):
        state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(duplicate,)))

    after = state_store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("reserve").attempt == 0


def test_new_step_record_for_missing_step_is_inserted(state_store: StateStore) -> None:
    """A version-1 record for a step the run lacks adds it (fan-out creates steps)."""
    create(state_store)
    added = StepRecord(run_id=RunId("r-1"), name=StepName("ship[0]"), updated_at=NOW)

    state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(added,)))

    after = state_store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("ship[0]") == added


def test_list_runs_filters_and_orders_newest_first(state_store: StateStore) -> None:
    """list_runs returns newest first, filtered by saga and statuses, at most limit."""
    create(state_store, "r-a", saga="order", created_at=T0 + 1)
    create(state_store, "r-b", saga="order", created_at=T0 + 3, status=RunStatus.COMPLETED)
    create(state_store, "r-c", saga="refund", created_at=T0 + 2)
    create(state_store, "r-d", saga="order", created_at=T0 + 3)

    def ids(runs: list[RunRecord]) -> list[str]:
        return [r.run_id for r in runs]

    assert ids(state_store.list_runs()) == ["r-d", "r-b", "r-c", "r-a"]
    assert ids(state_store.list_runs(limit=2)) == ["r-d", "r-b"]
    assert ids(state_store.list_runs(saga="order")) == ["r-d", "r-b", "r-a"]
    assert ids(state_store.list_runs(statuses=[RunStatus.COMPLETED])) == ["r-b"]
    assert ids(
        state_store.list_runs(saga="order", statuses=[RunStatus.PENDING, RunStatus.FAILED])
    ) == ["r-d", "r-a"]
    assert state_store.list_runs(saga="unknown") == []
    assert state_store.list_runs(limit=0) == []


def test_count_runs_by_status_counts_every_status(state_store: StateStore) -> None:
    """Counts are per status (zero for unused ones), optionally for one saga."""
    create(state_store, "r-a", saga="order")
    create(state_store, "r-b", saga="order", status=RunStatus.COMPLETED)
    create(state_store, "r-c", saga="refund")

    counts = state_store.count_runs_by_status()
    order_counts = state_store.count_runs_by_status(saga="order")

    assert counts[RunStatus.PENDING] == 2
    assert counts[RunStatus.COMPLETED] == 1
    assert counts[RunStatus.FAILED] == 0
    assert set(counts) == set(RunStatus)
    assert order_counts[RunStatus.PENDING] == 1
    assert order_counts[RunStatus.COMPLETED] == 1


def test_records_round_trip_every_field(state_store: StateStore) -> None:
    """Every field survives storage: floats, None, nested JSON, unicode, booleans."""
    nested = {"a": [1, 2.5, None, True, {"b": "ünïcødé ✓ 日本"}], "e": {}, "z": [[]]}
    run = RunRecord(
        run_id=RunId("r-ü/1"),
        saga="säga",
        status=RunStatus.WAITING,
        input=nested,
        definition_hash="sha256:ff",
        created_at=T0 + 0.123456789,
        updated_at=T0 + 1.5,
        idempotency_key="key-✓",
        output=[1, "two", 3.25],
        error="boom: ✗",
        compensation_reason="why: ✓",
        is_cancel_requested=True,
        version=1,
        redrive_count=3,
        redriven_at=T0 + 7.000001,
        error_detail="boom: ✗ for [redacted]\nline two",
    )
    step = StepRecord(
        run_id=run.run_id,
        name=StepName("stép"),
        status=StepStatus.COMPENSATING,
        attempt=4,
        budget_start=3,
        compensation_attempts=1,
        lease_until=T0 + 99.000001,
        retry_at=None,
        output={"$ref": "file:///tmp/x.json", "n": 1e-9},
        error=None,
        started_at=T0 + 0.5,
        finished_at=None,
        updated_at=T0 + 0.75,
        version=1,
        error_detail="ValueError: détail ✓",
    )
    bare = StepRecord(run_id=run.run_id, name=StepName("bare"), output="plain")
    state_store.create_run(run=run, steps=[step, bare], outbox=())

    snapshot = state_store.load_run(run_id=run.run_id)

    assert snapshot is not None
    assert snapshot.run == run
    assert snapshot.step("stép") == step
    assert snapshot.step("bare") == bare
    assert isinstance(snapshot.run.is_cancel_requested, bool)


def test_updates_store_the_compensation_counts_and_reason(state_store: StateStore) -> None:
    """An update (not only an insert) writes a step's compensation attempts and the reason."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    reserve = claim(snapshot.step("reserve"))
    state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(reserve,)))
    done = reserve.succeeded(now=NOW, output=1)
    compensating = snapshot.run.compensating(now=NOW, reason="charge failed", is_cancel=False)
    state_store.apply(change=StateChange(run_id=RunId("r-1"), run=compensating, steps=(done,)))
    undoing = done.compensation_claimed(now=NOW, lease_until=NOW + 30)
    failed = compensating.failed(now=NOW, error="compensation failed")
    state_store.apply(change=StateChange(run_id=RunId("r-1"), run=failed, steps=(undoing,)))

    after = state_store.load_run(run_id=RunId("r-1"))

    assert after is not None
    assert after.run == failed
    assert (after.run.error, after.run.compensation_reason) == (
        "compensation failed",
        "charge failed",
    )
    assert after.step("reserve") == undoing
    assert (undoing.execute_attempts, undoing.compensation_attempts) == (1, 1)


def test_updates_store_and_clear_the_error_detail(state_store: StateStore) -> None:
    """An update writes the public error and its detail on run and step; success clears them."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    reserve = claim(snapshot.step("reserve"))
    state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(reserve,)))
    retrying = reserve.retry_scheduled(
        now=NOW, retry_at=NOW + 5, error="E: withheld", error_detail="E: full ✓ text"
    )
    compensating = snapshot.run.compensating(
        now=NOW, reason="step failed: E", is_cancel=False, reason_detail="step failed: E: full"
    )
    state_store.apply(change=StateChange(RunId("r-1"), run=compensating, steps=(retrying,)))
    stored = state_store.load_run(run_id=RunId("r-1"))
    assert stored is not None
    assert (stored.run.error, stored.run.error_detail) == ("step failed: E", "step failed: E: full")
    assert (stored.step("reserve").error, stored.step("reserve").error_detail) == (
        "E: withheld",
        "E: full ✓ text",
    )

    again = claim(retrying)
    done = again.succeeded(now=NOW, output=1)
    state_store.apply(change=StateChange(RunId("r-1"), steps=(again,)))
    state_store.apply(change=StateChange(RunId("r-1"), steps=(done,)))
    after = state_store.load_run(run_id=RunId("r-1"))

    assert after is not None
    assert after.step("reserve") == done
    assert (done.error, done.error_detail) == (None, None)


def test_redrive_bookkeeping_persists_and_is_fenced_like_any_write(
    state_store: StateStore,
) -> None:
    """The sweeper's back-off (count, time) is stored, read back, listed, and version-fenced."""
    create(state_store, status=RunStatus.RUNNING)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    assert (snapshot.run.redrive_count, snapshot.run.redriven_at) == (0, None)
    first = snapshot.run.redriven(now=NOW)
    check = VersionCheck(StepName("reserve"), snapshot.step("reserve").version)
    state_store.apply(change=StateChange(RunId("r-1"), run=first, checks=(check,)))
    second = first.redriven(now=NOW + 20.25)
    state_store.apply(change=StateChange(RunId("r-1"), run=second))

    with pytest.raises(ConcurrencyConflict):  # a second sweeper acting on the old header
        state_store.apply(change=StateChange(RunId("r-1"), run=first.redriven(now=NOW + 21)))
    again = state_store.load_run(run_id=RunId("r-1"))

    assert again is not None
    assert again.run == second
    assert (again.run.redrive_count, again.run.redriven_at) == (2, NOW + 20.25)
    assert again.run.updated_at == T0  # bookkeeping is not progress of the run
    assert state_store.list_runs(statuses=[RunStatus.RUNNING]) == [second]


def test_stored_json_is_isolated_from_caller_objects(state_store: StateStore) -> None:
    """Mutating an object after writing it, or after reading it, does not change the store."""
    run = make_run()
    state_store.create_run(run=run, steps=make_steps(), outbox=())
    run.input["amount"] = 0
    first = state_store.load_run(run_id=run.run_id)
    assert first is not None
    first.run.input["amount"] = -1

    again = state_store.load_run(run_id=run.run_id)

    assert again is not None
    assert again.run.input["amount"] == 12.5


def test_committed_change_makes_outbox_deliverable(
    outbox_queue: PullQueue, state_store: StateStore
) -> None:
    """The outbox of a committed change (and of create_run) lands on the queue."""
    create_message = execute("r-1", "reserve")
    state_store.create_run(run=make_run(), steps=make_steps(), outbox=[create_message])
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    follow_up = execute("r-1", "charge")

    state_store.apply(
        change=StateChange(
            run_id=RunId("r-1"), steps=(claim(snapshot.step("reserve")),), outbox=(follow_up,)
        )
    )

    leased = outbox_queue.lease_due(now=NOW + 1, limit=10, lease_seconds=30)
    assert {d.message for d in leased} == {create_message, follow_up}


def test_conflicted_change_enqueues_nothing(
    outbox_queue: PullQueue, state_store: StateStore
) -> None:
    """A change rejected by a version check leaves no message on the queue."""
    create(state_store)
    snapshot = state_store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    state_store.apply(
        change=StateChange(run_id=RunId("r-1"), steps=(claim(snapshot.step("reserve")),))
    )

    with pytest.raises(ConcurrencyConflict):
        state_store.apply(
            change=StateChange(
                run_id=RunId("r-1"),
                steps=(claim(snapshot.step("reserve")),),
                outbox=(execute("r-1", "charge"),),
            )
        )

    assert outbox_queue.pending_count() == 0


def test_create_run_of_existing_id_enqueues_nothing(
    outbox_queue: PullQueue, state_store: StateStore
) -> None:
    """A duplicate create_run writes no outbox: the first start already enqueued its messages."""
    state_store.create_run(run=make_run(), steps=make_steps(), outbox=[])

    state_store.create_run(run=make_run(), steps=make_steps(), outbox=[execute("r-1", "x")])

    assert outbox_queue.pending_count() == 0


def test_change_with_record_of_another_run_is_rejected(state_store: StateStore) -> None:
    """A change may only touch the run it names; a foreign record is a programming error."""
    create(state_store)
    foreign = make_steps("r-2", ["reserve"])[0]

    with pytest.raises(ValueError, match="r-2"):
        state_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(foreign,)))
