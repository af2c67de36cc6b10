"""Compensation edge cases: parallel steps in flight, stale deliveries, lost workers."""

from __future__ import annotations

from core import NonRetryableStepError, RetryPolicy, RunStatus, Saga, StepContext, StepStatus
from core.domain.records import Message, StateChange
from core.domain.status import Action
from core.engine.saga_runner import Outcome
from tests.support.sagas import Calls
from tests.unit.harness import Harness


def test_compensation_waits_for_a_parallel_step_still_running_then_undoes_it() -> None:
    """A branch still in flight when its sibling fails finishes first, then is undone first."""
    calls = Calls()
    saga = Saga("branches")
    h: Harness
    seen: dict[str, object] = {}

    @saga.step
    def start(ctx: StepContext) -> None:
        calls.hit("start")

    @start.compensation
    def undo_start(ctx: StepContext) -> None:
        calls.hit("undo_start")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def left(ctx: StepContext) -> None:
        calls.hit("left")
        raise NonRetryableStepError("left is impossible")

    @left.compensation
    def undo_left(ctx: StepContext) -> None:
        calls.hit("undo_left")

    @saga.step(parallel=True)
    def right(ctx: StepContext) -> str:
        calls.hit("right")
        # While this step holds its lease, its sibling fails and compensation begins.
        h.deliver(Message(ctx.run_id, "left", Action.EXECUTE, 1))  # type: ignore[arg-type]
        early = h.deliver(Message(ctx.run_id, "right", Action.COMPENSATE, 2))  # type: ignore[arg-type]
        seen["early"] = early
        return "right done"

    @right.compensation
    def undo_right(ctx: StepContext) -> None:
        calls.hit("undo_right")
        seen["undo_right_saw"] = ctx.output

    h = Harness([saga])
    started = h.engine.runs.start("branches", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=60)[0]
    h.deliver(item.message)  # start succeeds; left and right become due together
    h.queue.ack(receipts=[item.receipt])
    branches = {
        d.message.step: d for d in h.queue.lease_due(now=h.clock.now(), limit=2, lease_seconds=60)
    }
    h.deliver(branches["right"].message)  # right runs first; inside it, left fails
    h.queue.ack(receipts=[d.receipt for d in branches.values()])
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    early = seen["early"]
    assert early.outcome is Outcome.RETRY_LATER  # type: ignore[attr-defined]
    assert snap.run.status is RunStatus.COMPENSATED
    assert calls.order == ["start", "right", "left", "undo_right", "undo_left", "undo_start"]
    assert seen["undo_right_saw"] == "right done"


def test_stale_and_early_compensation_deliveries_are_harmless() -> None:
    """A redelivered failed compensation attempt re-drives; the next one early is told to wait."""
    tries = {"n": 0}
    saga = Saga("undo-retry")

    @saga.step
    def a(ctx: StepContext) -> None:
        return None

    @a.compensation(retry=RetryPolicy(max_attempts=5, initial_delay_seconds=10, jitter=0))
    def undo_a(ctx: StepContext) -> None:
        tries["n"] += 1
        if tries["n"] == 1:
            raise ConnectionError("flaky")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def b(ctx: StepContext) -> None:
        raise NonRetryableStepError("no")

    h = Harness([saga])
    started = h.engine.runs.start("undo-retry", {})
    run_id = started.run.run_id
    for _ in range(3):  # a, b (fails), first compensation attempt of a (fails)
        item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
        h.deliver(item.message)
        h.queue.ack(receipts=[item.receipt])
    record = h.engine.runs.get(run_id).step("a")
    assert record.status is StepStatus.COMPENSATING and record.retry_at is not None
    stale = h.deliver(Message(run_id, record.name, Action.COMPENSATE, record.attempt))
    assert stale.outcome is Outcome.REDRIVEN
    early = h.deliver(Message(run_id, record.name, Action.COMPENSATE, record.attempt + 1))
    assert not early.is_done and early.retry_after_seconds > 9
    assert tries["n"] == 1
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPENSATED
    assert tries["n"] == 2


def test_compensation_attempts_lost_to_crashes_exhaust_the_budget() -> None:
    """A compensation whose workers keep dying ends the run FAILED, retryable by hand."""
    saga = Saga("undo-crash")

    @saga.step
    def a(ctx: StepContext) -> None:
        return None

    @a.compensation(retry=RetryPolicy(max_attempts=2))
    def undo_a(ctx: StepContext) -> None:
        return None

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def b(ctx: StepContext) -> None:
        raise NonRetryableStepError("no")

    h = Harness([saga])
    run_id = h.engine.runs.start("undo-crash", {}).run.run_id
    for _ in range(2):  # a succeeds, b fails: compensation of a is queued
        item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
        h.deliver(item.message)
        h.queue.ack(receipts=[item.receipt])
    record = h.engine.runs.get(run_id).step("a")
    for _ in range(2):  # two compensation attempts whose workers died
        record = record.compensation_claimed(now=h.clock.now(), lease_until=h.clock.now() + 1)
        h.store.apply(change=StateChange(record.run_id, steps=(record,)))
    h.pump()
    snap = h.engine.runs.get(run_id)
    assert snap.run.status is RunStatus.FAILED
    assert "relay runs retry" in (snap.run.error or "")
    h.engine.runs.retry(run_id)
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPENSATED


def test_lost_step_that_opts_out_of_compensation_is_marked_failed_and_skipped() -> None:
    """A step with compensate_on_failure=False whose worker died is not undone."""
    calls = Calls()
    saga = Saga("opt-out")

    @saga.step
    def a(ctx: StepContext) -> None:
        calls.hit("a")

    @a.compensation
    def undo_a(ctx: StepContext) -> None:
        calls.hit("undo_a")

    @saga.step(compensate_on_failure=False)
    def b(ctx: StepContext) -> None:
        calls.hit("b")

    @b.compensation
    def undo_b(ctx: StepContext) -> None:
        calls.hit("undo_b")

    h = Harness([saga])
    run_id = h.engine.runs.start("opt-out", {}).run.run_id
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    h.deliver(item.message)  # a succeeds; b's message is queued
    h.queue.ack(receipts=[item.receipt])
    record = h.engine.runs.get(run_id).step("b")
    lost = record.claimed(now=h.clock.now(), lease_until=h.clock.now() + 1, error=None)
    h.store.apply(change=StateChange(record.run_id, steps=(lost,)))
    h.clock.advance(5)
    h.engine.runs.cancel(run_id)
    h.pump()
    snap = h.engine.runs.get(run_id)
    assert snap.run.status is RunStatus.CANCELLED
    assert snap.step("b").status is StepStatus.FAILED
    assert calls.order == ["a", "undo_a"]


def test_messages_for_unknown_runs_steps_and_actions_are_acknowledged() -> None:
    """Poison messages are acknowledged with a reason instead of looping forever."""
    saga = Saga("plain")
    saga.step(lambda ctx: None, name="only")
    h = Harness([saga])
    run_id = h.engine.runs.start("plain", {}).run.run_id
    assert h.deliver(Message("r-nope", "only", Action.EXECUTE, 1)).is_done  # type: ignore[arg-type]
    assert h.deliver(Message(run_id, "ghost", Action.EXECUTE, 1)).is_done  # type: ignore[arg-type]
    resumed = h.deliver(Message(run_id, "only", Action.RESUME, 1))  # type: ignore[arg-type]
    assert resumed.outcome is Outcome.DROPPED
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPLETED
