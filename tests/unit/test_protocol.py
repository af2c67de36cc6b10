"""The step protocol on the memory adapters: every transition, duplicates, crashes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from core import (
    Failure,
    NonRetryableStepError,
    RetryPolicy,
    RunStatus,
    Saga,
    StepContext,
    StepStatus,
)
from core.domain.records import Message
from core.domain.status import Action
from core.errors import (
    IdempotencyKeyReusedError,
    InputValidationError,
    InvalidRunStateError,
    UnknownSagaError,
)
from tests.support.sagas import Calls, linear_saga
from tests.unit.harness import Harness

FAST = RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0)


@pytest.fixture
def calls() -> Calls:
    return Calls()


def run_to_end(h: Harness, saga: str = "linear", payload: Any = None) -> Any:
    started = h.engine.runs.start(saga, payload if payload is not None else {"n": 1})
    h.pump()
    return h.engine.runs.get(started.run.run_id)


def test_sequential_saga_completes_passing_outputs(calls: Calls) -> None:
    """Steps run in order, each seeing earlier outputs, and the run output collects them."""
    saga = Saga("flow")

    @saga.step
    def first(ctx: StepContext) -> int:
        return 20

    @saga.step
    def second(ctx: StepContext) -> int:
        return int(ctx.outputs["first"]) + 22

    h = Harness([saga])
    snap = run_to_end(h, "flow")
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.run.output == {"first": 20, "second": 42}
    assert [s.status for s in snap.steps.values()] == [StepStatus.SUCCEEDED] * 2


def test_idempotency_key_is_stable_across_attempts(calls: Calls) -> None:
    """Every attempt of a step sees the same run_id:step idempotency key."""
    h = Harness([linear_saga(calls, fail_at="b", failures=2)])
    snap = run_to_end(h)
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("b").output == {"step": "b", "attempt": 3, "key": f"{snap.run.run_id}:b"}
    assert snap.step("b").attempt == 3


def test_parallel_steps_fan_in_once() -> None:
    """Two parallel steps both run and their common successor runs exactly once."""
    saga = Saga("fan")
    seen = Calls()

    @saga.step
    def start(ctx: StepContext) -> None:
        seen.hit("start")

    @saga.step
    def left(ctx: StepContext) -> str:
        seen.hit("left")
        return "L"

    @saga.step(parallel=True)
    def right(ctx: StepContext) -> str:
        seen.hit("right")
        return "R"

    @saga.step(after=["left", "right"])
    def join(ctx: StepContext) -> str:
        seen.hit("join")
        return str(ctx.outputs["left"]) + str(ctx.outputs["right"])

    h = Harness([saga])
    snap = run_to_end(h, "fan")
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("join").output == "LR"
    assert seen == Counter(start=1, left=1, right=1, join=1)


def test_retry_waits_for_backoff_before_next_attempt(calls: Calls) -> None:
    """A failed attempt is retried only after its backoff delay has passed."""
    h = Harness([linear_saga(calls, fail_at="a", failures=1)])
    started = h.engine.runs.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=30)[0]
    assert h.deliver(item.message).is_done
    h.queue.ack(receipts=[item.receipt])
    record = h.engine.runs.get(started.run.run_id).step("a")
    assert record.status is StepStatus.PENDING and record.retry_at == h.clock.now() + 1.0
    early = h.deliver(Message(started.run.run_id, record.name, Action.EXECUTE, 2))
    assert not early.is_done and early.retry_after_seconds == pytest.approx(1.0)
    assert calls["a"] == 1
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_exhausted_step_compensates_finished_steps_in_reverse(calls: Calls) -> None:
    """When retries run out the run compensates, newest step first, then ends COMPENSATED."""
    h = Harness([linear_saga(calls, fail_at="c")])
    snap = run_to_end(h)
    assert snap.run.status is RunStatus.COMPENSATED
    assert "step 'c' failed after 3 attempt(s)" in (snap.run.error or "")
    assert calls.order == ["a", "b", "c", "c", "c", "undo_c", "undo_b", "undo_a"]
    assert {s.status for s in snap.steps.values()} == {StepStatus.COMPENSATED}


def test_compensate_on_failure_false_skips_the_failed_step(calls: Calls) -> None:
    """A step declared compensate_on_failure=False is not undone when it failed itself."""
    saga = Saga("partial")

    @saga.step
    def a(ctx: StepContext) -> None:
        calls.hit("a")

    @a.compensation
    def undo_a(ctx: StepContext) -> None:
        calls.hit("undo_a")

    @saga.step(compensate_on_failure=False, retry=RetryPolicy(max_attempts=1))
    def b(ctx: StepContext) -> None:
        raise RuntimeError("no")

    @b.compensation
    def undo_b(ctx: StepContext) -> None:
        calls.hit("undo_b")

    h = Harness([saga])
    snap = run_to_end(h, "partial")
    assert snap.run.status is RunStatus.COMPENSATED
    assert calls.order == ["a", "undo_a"]
    assert snap.step("b").status is StepStatus.FAILED


@pytest.mark.parametrize(
    "outcome",
    [NonRetryableStepError("declined"), "business failure"],
    ids=["non-retryable-exception", "failure-value"],
)
def test_deliberate_failures_are_not_retried(calls: Calls, outcome: object) -> None:
    """NonRetryableStepError and Failure(value) fail the step on the first attempt."""
    saga = Saga("reject")

    @saga.step
    def only(ctx: StepContext) -> object:
        calls.hit("only")
        if isinstance(outcome, Exception):
            raise outcome
        return Failure(outcome)

    h = Harness([saga])
    snap = run_to_end(h, "reject")
    assert snap.run.status is RunStatus.COMPENSATED
    assert calls["only"] == 1
    assert snap.step("only").status is StepStatus.FAILED


def test_failure_carrying_an_exception_is_retried(calls: Calls) -> None:
    """Failure(exception) is treated like the exception: retried by the policy."""
    saga = Saga("flaky")
    attempts = {"n": 0}

    @saga.step(retry=FAST)
    def only(ctx: StepContext) -> object:
        attempts["n"] += 1
        return Failure(ConnectionError("reset")) if attempts["n"] < 3 else "ok"

    h = Harness([saga])
    assert run_to_end(h, "flaky").run.status is RunStatus.COMPLETED
    assert attempts["n"] == 3


def test_timeout_counts_as_a_failed_attempt() -> None:
    """An attempt that overruns its timeout fails and is retried."""
    import threading

    release = threading.Event()
    saga = Saga("slow")
    attempts = {"n": 0}

    @saga.step(timeout_seconds=0.05, retry=FAST)
    def only(ctx: StepContext) -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            release.wait(2)
        return "done"

    h = Harness([saga])
    snap = run_to_end(h, "slow")
    release.set()
    assert snap.run.status is RunStatus.COMPLETED
    assert attempts["n"] == 2
    h.close()


def test_duplicate_delivery_of_every_message_changes_nothing(calls: Calls) -> None:
    """Redelivering every message of a finished run (execute, retry, compensate) is a no-op."""
    h = Harness([linear_saga(calls, fail_at="c")])
    snap = run_to_end(h)
    before = dict(calls)
    kinds = {m.action for m, _ in h.handled}
    assert kinds == {Action.EXECUTE, Action.COMPENSATE}
    for message, _ in list(h.handled):
        assert h.deliver(message).is_done
    h.pump()
    assert dict(calls) == before
    assert h.engine.runs.get(snap.run.run_id) == snap


def test_duplicate_delivery_mid_run_does_not_repeat_steps(calls: Calls) -> None:
    """Delivering each message twice while the run progresses runs each step once."""
    h = Harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    while True:
        batch = h.queue.lease_due(now=h.clock.now(), limit=10, lease_seconds=30)
        if not batch:
            break
        for item in batch:
            h.deliver(item.message)
            h.deliver(item.message)
            h.queue.ack(receipts=[item.receipt])
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED
    assert dict(calls) == {"a": 1, "b": 1, "c": 1}


def test_delivery_while_lease_is_held_asks_to_retry_later(calls: Calls) -> None:
    """A second delivery during a live attempt gets retry-later with the lease's remaining time."""
    saga = Saga("held")
    h: Harness

    @saga.step(timeout_seconds=10)
    def only(ctx: StepContext) -> None:
        nested = h.deliver(Message(ctx.run_id, ctx.step, Action.EXECUTE, 1))  # type: ignore[arg-type]
        assert not nested.is_done
        assert nested.retry_after_seconds == pytest.approx(10 + h.settings.lease_grace_seconds)
        calls.hit("only")

    h = Harness([saga])
    assert run_to_end(h, "held").run.status is RunStatus.COMPLETED
    assert calls["only"] == 1


def test_commit_after_lost_lease_is_fenced_out(calls: Calls) -> None:
    """A worker whose lease expired and was taken over cannot commit its stale result."""
    saga = Saga("fenced")
    h: Harness

    @saga.step(timeout_seconds=5)
    def slow(ctx: StepContext) -> int:
        calls.hit("slow")
        if ctx.attempt == 1:
            h.clock.advance(60)  # the lease runs out while this attempt is "stuck"
            assert h.deliver(Message(ctx.run_id, ctx.step, Action.EXECUTE, 1)).is_done  # type: ignore[arg-type]
        return ctx.attempt

    @saga.step
    def after(ctx: StepContext) -> None:
        calls.hit("after")

    h = Harness([saga])
    snap = run_to_end(h, "fenced")
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("slow").output == 2  # the takeover's result, not the stale one
    assert calls == Counter(slow=2, after=1)
    stale = [r for m, r in h.handled if r.detail.startswith("claim lost")]
    assert len(stale) == 1


class CrashOnEnqueue:
    """A queue wrapper whose next enqueue 'kills the process' after the commit happened."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False

    def enqueue(self, *, messages: Any) -> None:
        if self.armed:
            self.armed = False
            raise SystemExit("crash between commit and enqueue")
        self.inner.enqueue(messages=messages)

    def describe(self) -> Any:
        return self.inner.describe()


def test_crash_between_commit_and_enqueue_heals_on_redelivery(calls: Calls) -> None:
    """If the worker dies after committing but before enqueuing, redelivery re-drives."""
    h = Harness([linear_saga(calls)])
    crashing = CrashOnEnqueue(h.queue)
    h.engine.runner._queue = crashing  # type: ignore[assignment]
    started = h.engine.runs.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    crashing.armed = True
    with pytest.raises(SystemExit):
        h.engine.handle(item.message)
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.step("a").status is StepStatus.SUCCEEDED
    assert h.queue.pending_count() == 1  # only the unacknowledged message for a
    h.clock.advance(10)  # its queue lease runs out; the queue redelivers it
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED
    assert dict(calls) == {"a": 1, "b": 1, "c": 1}


def test_lost_worker_is_replaced_after_lease_expiry(calls: Calls) -> None:
    """A step whose worker vanished mid-attempt is claimed again once its lease expires."""
    h = Harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    snap = h.engine.runs.get(started.run.run_id)
    record = snap.step("a")
    crashed = record.evolve(
        now=h.clock.now(), status=StepStatus.RUNNING, attempt=1, lease_until=h.clock.now() + 6
    )
    from core.domain.records import StateChange

    h.store.apply(change=StateChange(record.run_id, steps=(crashed,)))
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("a").attempt == 2


def test_compensation_that_fails_then_succeeds_is_retried(calls: Calls) -> None:
    """A compensation is a retried step: transient failures do not stop the undo."""
    saga = Saga("undo-flaky")
    tries = {"n": 0}

    @saga.step
    def a(ctx: StepContext) -> None:
        calls.hit("a")

    @a.compensation(retry=RetryPolicy(max_attempts=5, initial_delay_seconds=1, jitter=0))
    def undo_a(ctx: StepContext) -> None:
        tries["n"] += 1
        if tries["n"] < 3:
            raise ConnectionError("refund service down")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def b(ctx: StepContext) -> None:
        raise NonRetryableStepError("nope")

    h = Harness([saga])
    snap = run_to_end(h, "undo-flaky")
    assert snap.run.status is RunStatus.COMPENSATED
    assert tries["n"] == 3
    assert snap.step("a").status is StepStatus.COMPENSATED


def test_compensation_that_never_succeeds_fails_the_run_and_retry_finishes_it() -> None:
    """An undo that exhausts its retries leaves the run FAILED; `retry` resumes and completes it."""
    saga = Saga("undo-broken")
    broken = {"yes": True}
    undone: list[str] = []

    @saga.step
    def a(ctx: StepContext) -> None:
        return None

    @a.compensation(retry=RetryPolicy(max_attempts=2, initial_delay_seconds=1, jitter=0))
    def undo_a(ctx: StepContext) -> None:
        if broken["yes"]:
            raise ConnectionError("refund service down")
        undone.append(ctx.idempotency_key)

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def b(ctx: StepContext) -> None:
        raise NonRetryableStepError("nope")

    h = Harness([saga])
    snap = run_to_end(h, "undo-broken")
    assert snap.run.status is RunStatus.FAILED
    assert "compensation of step 'a'" in (snap.run.error or "")
    assert "relay runs retry" in (snap.run.error or "")
    assert snap.step("a").status is StepStatus.COMPENSATING
    with pytest.raises(InvalidRunStateError):
        h.engine.runs.cancel(snap.run.run_id)
    broken["yes"] = False
    h.engine.runs.retry(snap.run.run_id)
    h.pump()
    snap = h.engine.runs.get(snap.run.run_id)
    assert snap.run.status is RunStatus.COMPENSATED
    assert undone == [f"{snap.run.run_id}:a"]


def test_retry_is_refused_for_runs_that_did_not_fail(calls: Calls) -> None:
    """Only FAILED runs can be retried by hand."""
    h = Harness([linear_saga(calls)])
    snap = run_to_end(h)
    with pytest.raises(InvalidRunStateError):
        h.engine.runs.retry(snap.run.run_id)


def test_cancel_before_any_step_ends_cancelled_without_compensation(calls: Calls) -> None:
    """Cancelling a run that has not started a step ends it CANCELLED at once."""
    h = Harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    assert h.engine.runs.cancel(started.run.run_id).status is RunStatus.CANCELLED
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.CANCELLED
    assert not calls
    assert {s.status for s in snap.steps.values()} == {StepStatus.SKIPPED}


def test_cancel_mid_run_undoes_finished_steps_then_ends_cancelled(calls: Calls) -> None:
    """Cancelling after some steps compensates them in reverse and ends CANCELLED."""
    h = Harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    for _ in range(2):  # run a and b
        item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
        h.deliver(item.message)
        h.queue.ack(receipts=[item.receipt])
    h.engine.runs.cancel(started.run.run_id)
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.CANCELLED
    assert calls.order == ["a", "b", "undo_b", "undo_a"]
    assert snap.step("c").status is StepStatus.SKIPPED


def test_same_idempotency_key_returns_the_same_run(calls: Calls) -> None:
    """Starting twice with one key gives one run; a different input under it is refused."""
    h = Harness([linear_saga(calls)])
    first = h.engine.runs.start("linear", {"n": 1}, idempotency_key="k1")
    second = h.engine.runs.start("linear", {"n": 1}, idempotency_key="k1")
    assert first.is_created and not second.is_created
    assert first.run.run_id == second.run.run_id
    with pytest.raises(IdempotencyKeyReusedError):
        h.engine.runs.start("linear", {"n": 2}, idempotency_key="k1")
    h.pump()
    assert dict(calls) == {"a": 1, "b": 1, "c": 1}


def test_invalid_input_and_unknown_saga_write_nothing() -> None:
    """A rejected start raises a specific error and creates no run and no message."""

    class In(BaseModel):
        amount: int

    saga = Saga("typed", input_model=In)

    @saga.step
    def only(ctx: StepContext) -> int:
        return int(ctx.input.amount)

    h = Harness([saga])
    with pytest.raises(InputValidationError) as info:
        h.engine.runs.start("typed", {"amount": "lots"})
    assert info.value.errors[0]["loc"] == ["amount"]
    with pytest.raises(UnknownSagaError):
        h.engine.runs.start("nope", {})
    assert h.store.list_runs() == [] and h.queue.pending_count() == 0
    assert run_to_end(h, "typed", {"amount": 5}).run.output == {"only": 5}


def test_definition_drift_fails_the_run_naming_the_missing_step(calls: Calls) -> None:
    """A worker whose saga lacks a step the run still needs fails it with that step's name."""
    old = linear_saga(calls, name="drift")
    h = Harness([old])
    started = h.engine.runs.start("drift", {})
    new = Saga("drift")

    @new.step
    def a(ctx: StepContext) -> None:
        calls.hit("new_a")

    from core.registry import SagaRegistry

    h.engine.runner._registry = SagaRegistry({"drift": new})
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.FAILED
    assert "no longer has step(s) b, c" in (snap.run.error or "")
    h.engine.runner._registry = h.registry  # "deploy" the version that has the steps
    h.engine.runs.retry(started.run.run_id)
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_sweeper_redrives_a_run_whose_message_was_lost(calls: Calls) -> None:
    """If a run's message vanishes, the sweeper re-creates it once the run looks stuck."""
    h = Harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    h.queue.ack(receipts=[item.receipt])  # the message is gone, nothing ran
    assert h.engine.sweeper.sweep(stale_after_seconds=60).redriven == 0  # not stale yet
    h.clock.advance(120)
    assert h.engine.sweeper.sweep(stale_after_seconds=60).redriven == 1
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_large_outputs_go_through_the_io_manager() -> None:
    """An output above the inline limit is stored by reference and read back transparently."""
    saga = Saga("big")

    @saga.step
    def produce(ctx: StepContext) -> list[int]:
        return list(range(50_000))

    @saga.step
    def consume(ctx: StepContext) -> int:
        return sum(ctx.outputs["produce"])

    h = Harness([saga])
    snap = run_to_end(h, "big")
    assert snap.run.status is RunStatus.COMPLETED
    assert "$ref" in snap.step("produce").output
    assert snap.step("consume").output == sum(range(50_000))


def test_non_json_output_fails_the_step_without_retry(calls: Calls) -> None:
    """A step returning something that is not JSON fails at once with a clear message."""
    saga = Saga("weird")

    @saga.step
    def only(ctx: StepContext) -> object:
        calls.hit("only")
        return object()

    h = Harness([saga])
    snap = run_to_end(h, "weird")
    assert snap.run.status is RunStatus.COMPENSATED
    assert "not JSON" in (snap.step("only").error or "")
    assert calls["only"] == 1


def test_crashes_that_exhaust_the_budget_lead_to_compensation(calls: Calls) -> None:
    """Attempts lost to crashes count against the retry budget, so a poison step ends."""
    h = Harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    run_id = started.run.run_id
    from core.domain.records import StateChange

    for _ in range(2):  # a and b succeed normally
        item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
        h.deliver(item.message)
        h.queue.ack(receipts=[item.receipt])
    record = h.engine.runs.get(run_id).step("c")
    dead = record.evolve(
        now=h.clock.now(), status=StepStatus.RUNNING, attempt=3, lease_until=h.clock.now() + 1
    )
    h.store.apply(change=StateChange(record.run_id, steps=(dead,)))
    h.pump()
    snap = h.engine.runs.get(run_id)
    assert snap.run.status is RunStatus.COMPENSATED
    assert "lost its lease" in (snap.step("c").error or "")
    assert calls.order == ["a", "b", "undo_c", "undo_b", "undo_a"]
