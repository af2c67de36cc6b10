"""Compensation edge cases on every state store: parallel steps in flight, stale deliveries,
lost workers."""

from __future__ import annotations

import pytest

from core import NonRetryableStepError, RetryPolicy, RunStatus, Saga, StepContext, StepStatus
from core.domain.status import Action
from core.engine.saga_runner import Outcome
from core.testing import SagaHarness
from tests.support.backends.fixtures import MakeHarness
from tests.support.sagas import Calls

pytestmark = pytest.mark.protocol


def test_compensation_waits_for_a_parallel_step_still_running_then_undoes_it(
    saga_harness: MakeHarness,
) -> None:
    """A branch still in flight when its sibling fails finishes first, then is undone first."""
    calls = Calls()
    saga = Saga("branches")
    h: SagaHarness
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
        h.deliver(h.message(ctx.run_id, "left"))
        early = h.deliver(h.message(ctx.run_id, "right", action=Action.COMPENSATE, attempt=2))
        seen["early"] = early
        return "right done"

    @right.compensation
    def undo_right(ctx: StepContext) -> None:
        calls.hit("undo_right")
        seen["undo_right_saw"] = ctx.output

    h = saga_harness([saga])
    started = h.start("branches", {})
    h.deliver_due()  # start succeeds; left and right become due together
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


def test_stale_and_early_compensation_deliveries_are_harmless(saga_harness: MakeHarness) -> None:
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

    h = saga_harness([saga])
    run_id = h.start("undo-retry", {}).run.run_id
    for _ in range(3):  # a, b (fails), first compensation attempt of a (fails)
        h.deliver_due()
    record = h.snapshot(run_id).step("a")
    assert record.status is StepStatus.COMPENSATING and record.retry_at is not None
    compensate = Action.COMPENSATE
    stale = h.deliver(h.message(run_id, "a", action=compensate, attempt=record.attempt))
    assert stale.outcome is Outcome.REDRIVEN
    early = h.deliver(h.message(run_id, "a", action=compensate, attempt=record.attempt + 1))
    assert not early.is_done and early.retry_after_seconds > 9
    assert tries["n"] == 1
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPENSATED
    assert tries["n"] == 2


def test_compensation_attempts_lost_to_crashes_exhaust_the_budget(
    saga_harness: MakeHarness,
) -> None:
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

    h = saga_harness([saga])
    run_id = h.start("undo-crash", {}).run.run_id
    h.deliver_due()  # a succeeds
    h.deliver_due()  # b fails: compensation of a is queued
    h.abandon_claim(run_id, "a", action=Action.COMPENSATE, claims=2)  # both workers died
    h.pump()
    snap = h.engine.runs.get(run_id)
    assert snap.run.status is RunStatus.FAILED
    assert "relay runs retry" in (snap.run.error or "")
    h.engine.runs.retry(run_id)
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPENSATED


def test_lost_step_that_opts_out_of_compensation_is_marked_failed_and_skipped(
    saga_harness: MakeHarness,
) -> None:
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

    h = saga_harness([saga])
    run_id = h.start("opt-out", {}).run.run_id
    h.deliver_due()  # a succeeds; b's message is queued
    h.abandon_claim(run_id, "b")  # b's worker died
    h.clock.advance(5)
    h.engine.runs.cancel(run_id)
    h.pump()
    snap = h.engine.runs.get(run_id)
    assert snap.run.status is RunStatus.CANCELLED
    assert snap.step("b").status is StepStatus.FAILED
    assert calls.order == ["a", "undo_a"]


def test_messages_for_unknown_runs_steps_and_actions_are_acknowledged(
    saga_harness: MakeHarness,
) -> None:
    """Poison messages are acknowledged with a reason instead of looping forever."""
    saga = Saga("plain")
    saga.step(lambda ctx: None, name="only")
    h = saga_harness([saga])
    run_id = h.start("plain", {}).run.run_id
    assert h.deliver(h.message("r-nope", "only")).is_done
    assert h.deliver(h.message(run_id, "ghost")).is_done
    resumed = h.deliver(h.message(run_id, "only", action=Action.RESUME))
    assert resumed.outcome is Outcome.DROPPED
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPLETED


def test_attempt_numbers_count_each_function_from_one(saga_harness: MakeHarness) -> None:
    """A step retried twice, then its compensation retried once: ctx.attempt is 1, 2, 3 and
    then 1, 2 (the compensation's own count), and the step record keeps them apart."""
    seen: list[tuple[str, int]] = []
    saga = Saga("counts")
    quick = RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0)

    @saga.step(retry=quick)
    def flaky(ctx: StepContext) -> None:
        seen.append((ctx.action.value, ctx.attempt))
        raise RuntimeError("still broken")

    @flaky.compensation(retry=RetryPolicy(max_attempts=2, initial_delay_seconds=1.0, jitter=0.0))
    def undo_flaky(ctx: StepContext) -> None:
        seen.append((ctx.action.value, ctx.attempt))
        if ctx.attempt == 1:
            raise RuntimeError("undo hiccup")

    h = saga_harness([saga])
    snap = h.run("counts", {})

    assert snap.run.status is RunStatus.COMPENSATED
    assert seen == [("execute", 1), ("execute", 2), ("execute", 3), ("compensate", 1),
                    ("compensate", 2)]  # fmt: skip
    record = snap.step("flaky")
    assert (record.execute_attempts, record.compensation_attempts) == (3, 2)
    assert "failed after 3 attempt(s)" in (snap.run.error or "")
