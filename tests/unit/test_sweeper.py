"""The sweeper re-drives only runs whose messages are overdue, backs off per run, and is bounded.

The queue here counts every message the engine hands it, as a standard SQS queue would
deliver each one (the memory queue behind it drops ids already queued, SQS does not).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from core.domain.context import StepContext
from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus
from core.engine.engine import Engine
from core.engine.sweeper import SweepSettings, backoff_seconds
from core.errors import NonRetryableStepError
from core.ports.clock import FixedClock
from core.registry import SagaRegistry
from infra.memory.io_manager import MemoryIOManager
from infra.memory.state_store import MemoryStateStore
from infra.memory.task_queue import MemoryTaskQueue

STALE = 60.0
HOUR = 3600.0


class CountingQueue:
    """The memory queue, remembering every message the engine enqueued (duplicates too)."""

    def __init__(self, clock: FixedClock) -> None:
        self.inner = MemoryTaskQueue(clock=clock.now)
        self.sent: list[Message] = []

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)
        self.inner.enqueue(messages=messages)

    def describe(self) -> Mapping[str, str]:
        return self.inner.describe()

    def lose_everything(self) -> int:
        """Drop every queued message, as a queue purged by hand would."""
        lost = self.inner.lease_due(now=float("inf"), limit=100_000, lease_seconds=1.0)
        self.inner.ack(receipts=[item.receipt for item in lost])
        return len(lost)


class CountingStore(MemoryStateStore):
    """The memory store, counting full run loads; ``before_apply`` lets a test race a write."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.before_apply: list[StateChange] = []

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        self.loads += 1
        return super().load_run(run_id=run_id)

    def apply(self, *, change: StateChange) -> None:
        while self.before_apply:
            super().apply(change=self.before_apply.pop(0))
        super().apply(change=change)


@dataclass
class World:
    clock: FixedClock
    store: CountingStore
    queue: CountingQueue
    engine: Engine

    def start(self, saga: str, count: int = 1) -> list[RunId]:
        return [self.engine.runs.start(saga, {}).run.run_id for _ in range(count)]

    def deliver_due(self) -> int:
        """Deliver every message due now (one worker, no faults)."""
        delivered = 0
        while batch := self.queue.inner.lease_due(
            now=self.clock.now(), limit=10, lease_seconds=60.0
        ):
            for item in batch:
                result = self.engine.handle(item.message)
                if result.is_done:
                    self.queue.inner.ack(receipts=[item.receipt])
                else:
                    self.queue.inner.release(
                        receipt=item.receipt, delay_seconds=result.retry_after_seconds
                    )
                delivered += 1
        return delivered

    def sweep(self) -> int:
        self.queue.sent.clear()
        return self.engine.sweeper.sweep(stale_after_seconds=STALE).redriven

    def run(self, run_id: RunId) -> RunSnapshot:
        return self.engine.runs.get(run_id)


def make_world(*sagas: Saga, settings: SweepSettings | None = None, store=None) -> World:
    clock = FixedClock()
    registry = SagaRegistry()
    for saga in sagas:
        registry.register(saga)
    queue = CountingQueue(clock)
    store = store or CountingStore()
    engine = Engine(
        registry=registry,
        store=store,
        queue=queue,
        io_manager=MemoryIOManager(),
        clock=clock,
        rng=random.Random(3),
        sweep_settings=settings or SweepSettings(),
    )
    return World(clock, store, queue, engine)


def two_steps() -> Saga:
    saga = Saga("two")
    saga.step(lambda ctx: {"a": 1}, name="first")
    saga.step(lambda ctx: {"b": 2}, name="second")
    return saga


def sleeper() -> Saga:
    saga = Saga("sleeper")
    saga.sleep("nap", seconds=HOUR)
    saga.step(lambda ctx: {"after": True}, name="after")
    return saga


def undone() -> Saga:
    saga = Saga("undone")

    @saga.step
    def book(ctx: StepContext) -> dict[str, int]:
        return {"booked": 1}

    @book.compensation
    def unbook(ctx: StepContext) -> None:
        return None

    @saga.step
    def pay(ctx: StepContext) -> None:
        raise NonRetryableStepError("declined")

    return saga


# -- slow is not lost ------------------------------------------------------------------


def test_a_run_whose_message_is_merely_queued_is_not_redriven_before_it_is_overdue() -> None:
    """A message waiting in a slow queue less than the grace period is left alone."""
    w = make_world(two_steps())
    w.start("two", 5)

    w.clock.advance(STALE - 1)

    assert w.sweep() == 0
    assert w.queue.sent == []


def test_a_step_a_worker_holds_is_not_redriven_however_long_it_runs() -> None:
    """A live lease means a worker is on it: no message is overdue, even after hours."""
    w = make_world(two_steps())
    (run_id,) = w.start("two")
    first = w.run(run_id).step("first")
    claimed = first.claimed(now=w.clock.now(), lease_until=w.clock.now() + 3 * HOUR, error=None)
    w.store.apply(change=StateChange(run_id, steps=(claimed,)))
    w.queue.lose_everything()

    w.clock.advance(2 * HOUR)

    assert w.sweep() == 0


def test_a_sleeping_run_is_not_redriven_before_its_deadline() -> None:
    """A parked run's wake-up is due at its deadline: before it, nothing is known to be lost."""
    w = make_world(sleeper())
    (run_id,) = w.start("sleeper")
    w.deliver_due()
    assert w.run(run_id).run.status is RunStatus.WAITING

    w.clock.advance(HOUR - 1)

    assert w.sweep() == 0


# -- lost is re-driven -----------------------------------------------------------------


def test_a_run_whose_message_was_lost_is_redriven_and_finishes() -> None:
    """Once its only message is overdue by the grace period, it is sent again."""
    w = make_world(two_steps())
    (run_id,) = w.start("two")
    assert w.queue.lose_everything() == 1

    w.clock.advance(STALE + 1)
    redriven = w.sweep()

    assert redriven == 1
    assert [m.message_id for m in w.queue.sent] == [f"{run_id}/first/execute/1"]
    w.deliver_due()
    assert w.run(run_id).run.status is RunStatus.COMPLETED


def test_a_step_whose_worker_died_is_redriven_after_its_lease_and_the_grace() -> None:
    """RUNNING with an expired lease and no message: due at lease_until, sent after the grace."""
    w = make_world(two_steps())
    (run_id,) = w.start("two")
    first = w.run(run_id).step("first")
    lease_until = w.clock.now() + 30
    claimed = first.claimed(now=w.clock.now(), lease_until=lease_until, error=None)
    w.store.apply(change=StateChange(run_id, steps=(claimed,)))
    w.queue.lose_everything()  # the delivery died with its worker and went to the DLQ

    w.clock.advance(30 + STALE - 1)
    assert w.sweep() == 0
    w.clock.advance(2)
    assert w.sweep() == 1

    assert [m.message_id for m in w.queue.sent] == [f"{run_id}/first/execute/2"]
    w.deliver_due()
    assert w.run(run_id).run.status is RunStatus.COMPLETED


def test_a_lost_wake_up_is_redriven_after_the_deadline() -> None:
    """A parked run whose wake-up vanished wakes up once the deadline is past the grace."""
    w = make_world(sleeper())
    (run_id,) = w.start("sleeper")
    w.deliver_due()
    w.queue.lose_everything()

    w.clock.advance(HOUR + STALE + 1)

    assert w.sweep() == 1
    assert [m.action for m in w.queue.sent] == [Action.RESUME]
    w.deliver_due()
    assert w.run(run_id).run.status is RunStatus.COMPLETED


def test_a_compensating_run_with_nothing_in_progress_is_redriven_to_its_end() -> None:
    """The compensate message of a COMPENSATING run was lost: the sweeper sends it again."""
    w = make_world(undone())
    (run_id,) = w.start("undone")
    (book,) = w.queue.inner.lease_due(now=w.clock.now(), limit=1, lease_seconds=60.0)
    assert w.engine.handle(book.message).is_done  # book succeeds and enqueues pay
    w.queue.lose_everything()
    pay = Message(run_id, w.run(run_id).step("pay").name, Action.EXECUTE, 1)
    w.engine.handle(pay)  # pay fails for good: compensation starts
    assert w.run(run_id).run.status is RunStatus.COMPENSATING
    w.queue.lose_everything()

    w.clock.advance(STALE + 1)

    assert w.sweep() == 1
    assert [m.action for m in w.queue.sent] == [Action.COMPENSATE]
    w.deliver_due()
    assert w.run(run_id).run.status is RunStatus.COMPENSATED


def test_a_redrive_that_races_a_worker_sends_nothing() -> None:
    """If a worker moves the run between the sweeper's read and its write, nothing is sent."""
    w = make_world(two_steps())
    (run_id,) = w.start("two")
    w.queue.lose_everything()
    w.clock.advance(STALE + 1)
    first = w.run(run_id).step("first")
    w.store.before_apply.append(
        StateChange(
            run_id,
            steps=(first.claimed(now=w.clock.now(), lease_until=w.clock.now() + 30, error=None),),
        )
    )

    w.queue.sent.clear()
    report = w.engine.sweeper.sweep(stale_after_seconds=STALE)

    assert (report.redriven, report.raced, report.messages) == (0, 1, 0)
    assert w.queue.sent == []
    assert w.run(run_id).run.redrive_count == 0


# -- back-off --------------------------------------------------------------------------


def test_the_wait_between_redrives_of_one_run_doubles_and_survives_a_new_container() -> None:
    """A run that stays stuck is re-driven after 1, 2, 4, 8 grace periods, kept in its header."""
    w = make_world(two_steps())
    (run_id,) = w.start("two")
    redriven_at: list[float] = []
    is_fresh = False
    for _ in range(int(40 * STALE)):
        w.queue.lose_everything()  # every re-sent message is lost again
        if w.sweep():
            redriven_at.append(w.clock.now())
        w.clock.advance(1.0)
        if len(redriven_at) == 3 and not is_fresh:
            # The next sweeps run in a fresh container: a new engine on the same store.
            is_fresh = True
            now = w.clock.now()
            w = make_world(two_steps(), store=w.store)
            w.clock.advance(now - w.clock.now())
    gaps = [later - earlier for earlier, later in itertools.pairwise(redriven_at)]

    assert gaps == pytest.approx([2 * STALE, 4 * STALE, 8 * STALE, 16 * STALE], abs=1.0)
    header = w.run(run_id).run
    assert (header.redrive_count, header.redriven_at) == (5, redriven_at[-1])


def test_backoff_is_capped() -> None:
    """However often a run was re-driven, the wait never exceeds the cap."""
    waits = [backoff_seconds(n, stale_after_seconds=STALE, cap_seconds=HOUR) for n in range(60)]

    assert waits[:3] == [0.0, 2 * STALE, 4 * STALE]
    assert max(waits) == HOUR and waits[-1] == HOUR


def test_a_slow_queue_gets_a_few_messages_per_run_not_one_per_sweep() -> None:
    """Messages never delivered for 30 min, swept every 5 s: each run gets at most ~log2(30)."""
    w = make_world(two_steps())
    w.start("two", 20)
    sent = 0
    for _ in range(int(1800 / 5)):
        w.clock.advance(5.0)
        w.sweep()
        sent += len(w.queue.sent)

    # 1800 s / 60 s of grace: re-drives at ~60, 180, 420, 900 s (and none after 1,860 s).
    assert sent == 20 * 4
    assert all(w.run(r.run_id).run.redrive_count == 4 for r in w.engine.runs.list(limit=100))


# -- bounded work ----------------------------------------------------------------------


def test_one_sweep_loads_and_sends_within_its_limits_and_later_sweeps_reach_the_rest() -> None:
    """50 stuck runs, at most 10 loads and 5 messages per sweep; every run is reached."""
    settings = SweepSettings(max_loads=10, max_messages=5, scan_limit=1000)
    w = make_world(two_steps(), settings=settings)
    run_ids = w.start("two", 50)
    w.queue.lose_everything()
    w.queue.sent.clear()
    w.clock.advance(STALE + 1)

    sweeps = 0
    while any(w.run(r).run.redrive_count == 0 for r in run_ids):
        w.store.loads = 0
        report = w.engine.sweeper.sweep(stale_after_seconds=STALE)
        sweeps += 1
        assert w.store.loads <= 10 and report.loaded <= 10
        assert report.messages <= 5 and len(w.queue.sent) <= 5
        assert report.is_truncated or sweeps > 1
        w.queue.sent.clear()
        assert sweeps < 100, "some runs were never reached"

    assert sweeps >= 10


def test_headers_in_back_off_are_not_loaded() -> None:
    """A run re-driven a moment ago costs the next sweep a header read, not a full load."""
    w = make_world(two_steps())
    w.start("two", 8)
    w.queue.lose_everything()
    w.clock.advance(STALE + 1)
    assert w.sweep() == 8
    w.store.loads = 0

    w.clock.advance(1.0)
    report = w.engine.sweeper.sweep(stale_after_seconds=STALE)

    assert (report.listed, report.backing_off, report.loaded, w.store.loads) == (8, 8, 0, 0)


def test_a_negative_grace_is_refused() -> None:
    """A bad argument is an error, not a sweep of everything."""
    w = make_world(two_steps())

    with pytest.raises(ValueError, match="stale_after_seconds"):
        w.engine.sweeper.sweep(stale_after_seconds=-1)


def test_runs_of_sagas_this_process_does_not_serve_are_left_alone() -> None:
    """Another worker's saga is that worker's to sweep: not even loaded here."""
    w = make_world(two_steps())
    foreign = RunRecord(
        run_id=RunId("r-foreign"),
        saga="elsewhere",
        status=RunStatus.RUNNING,
        input={},
        definition_hash="h",
        created_at=w.clock.now(),
        updated_at=w.clock.now(),
    )
    w.store.create_run(run=foreign, steps=[StepRecord(foreign.run_id, StepName("s"))], outbox=())
    w.clock.advance(10 * STALE)

    report = w.engine.sweeper.sweep(stale_after_seconds=STALE)

    assert (report.listed, report.loaded, report.redriven) == (1, 0, 0)
