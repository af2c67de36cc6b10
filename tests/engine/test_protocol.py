"""The step protocol on every state store: every transition, duplicates, crashes."""

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
from core.domain.status import Action
from core.engine.saga_runner import Outcome, RunnerSettings
from core.errors import (
    IdempotencyKeyReusedError,
    InputValidationError,
    InvalidRunStateError,
    UnknownSagaError,
)
from core.ports.task_queue import PullQueue
from core.testing import SagaHarness
from tests.support.backends.fixtures import MakeHarness
from tests.support.sagas import FAST, Calls, linear_saga

pytestmark = pytest.mark.protocol


@pytest.fixture
def calls() -> Calls:
    return Calls()


def run_to_end(h: SagaHarness, saga: str = "linear", payload: Any = None) -> Any:
    return h.run(saga, payload if payload is not None else {"n": 1})


def test_sequential_saga_completes_passing_outputs(saga_harness: MakeHarness, calls: Calls) -> None:
    """Steps run in order, each seeing earlier outputs, and the run output collects them."""
    saga = Saga("flow")

    @saga.step
    def first(ctx: StepContext) -> int:
        return 20

    @saga.step
    def second(ctx: StepContext) -> int:
        return int(ctx.outputs["first"]) + 22

    h = saga_harness([saga])
    snap = run_to_end(h, "flow")
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.run.output == {"first": 20, "second": 42}
    assert [s.status for s in snap.steps.values()] == [StepStatus.SUCCEEDED] * 2


def test_a_typed_saga_gets_its_input_model_and_reads_outputs_back_as_models(
    saga_harness: MakeHarness,
) -> None:
    """Steps receive the input model and read an earlier model output back through the store."""

    class Order(BaseModel):
        customer_id: str
        cents: int

    class Charged(BaseModel):
        charge_id: str
        cents: int

    saga = Saga("typed-flow", input_model=Order)

    @saga.step
    def charge(ctx: StepContext[Order]) -> Charged:
        return Charged(charge_id=f"ch-{ctx.input.customer_id}", cents=ctx.input.cents)

    @saga.step
    def receipt(ctx: StepContext[Order]) -> str:
        charged = ctx.output_of("charge", Charged)
        return f"{charged.charge_id}:{charged.cents}"

    snap = saga_harness([saga]).run("typed-flow", {"customer_id": "c-1", "cents": 250})
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("charge").output == {"charge_id": "ch-c-1", "cents": 250}
    assert snap.step("receipt").output == "ch-c-1:250"


def test_idempotency_key_is_stable_across_attempts(saga_harness: MakeHarness, calls: Calls) -> None:
    """Every attempt of a step sees the same run_id:step idempotency key."""
    h = saga_harness([linear_saga(calls, fail_at="b", failures=2)])
    snap = run_to_end(h)
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("b").output == {"step": "b", "attempt": 3, "key": f"{snap.run.run_id}:b"}
    assert snap.step("b").attempt == 3


def test_parallel_steps_fan_in_once(saga_harness: MakeHarness) -> None:
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

    h = saga_harness([saga])
    snap = run_to_end(h, "fan")
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("join").output == "LR"
    assert seen == Counter(start=1, left=1, right=1, join=1)


def test_retry_waits_for_backoff_before_next_attempt(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """A failed attempt is retried only after its backoff delay has passed."""
    h = saga_harness([linear_saga(calls, fail_at="a", failures=1)])
    started = h.start("linear", {})
    [first] = h.deliver_due()
    assert first.is_done
    record = h.snapshot(started.run.run_id).step("a")
    assert record.status is StepStatus.PENDING and record.retry_at == h.clock.now() + 1.0
    early = h.deliver(h.message(started.run.run_id, "a", attempt=2))
    assert not early.is_done and early.retry_after_seconds == pytest.approx(1.0)
    assert calls["a"] == 1
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_exhausted_step_compensates_finished_steps_in_reverse(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """When retries run out the run compensates, newest step first, then ends COMPENSATED."""
    h = saga_harness([linear_saga(calls, fail_at="c")])
    snap = run_to_end(h)
    assert snap.run.status is RunStatus.COMPENSATED
    assert "step 'c' failed after 3 attempt(s)" in (snap.run.error or "")
    assert calls.order == ["a", "b", "c", "c", "c", "undo_c", "undo_b", "undo_a"]
    assert {s.status for s in snap.steps.values()} == {StepStatus.COMPENSATED}


def test_compensate_on_failure_false_skips_the_failed_step(
    saga_harness: MakeHarness, calls: Calls
) -> None:
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

    h = saga_harness([saga])
    snap = run_to_end(h, "partial")
    assert snap.run.status is RunStatus.COMPENSATED
    assert calls.order == ["a", "undo_a"]
    assert snap.step("b").status is StepStatus.FAILED


@pytest.mark.parametrize(
    "outcome",
    [NonRetryableStepError("declined"), "business failure"],
    ids=["non-retryable-exception", "failure-value"],
)
def test_deliberate_failures_are_not_retried(
    saga_harness: MakeHarness, calls: Calls, outcome: object
) -> None:
    """NonRetryableStepError and Failure(value) fail the step on the first attempt."""
    saga = Saga("reject")

    @saga.step
    def only(ctx: StepContext) -> object:
        calls.hit("only")
        if isinstance(outcome, Exception):
            raise outcome
        return Failure(outcome)

    h = saga_harness([saga])
    snap = run_to_end(h, "reject")
    assert snap.run.status is RunStatus.COMPENSATED
    assert calls["only"] == 1
    assert snap.step("only").status is StepStatus.FAILED


def test_failure_carrying_an_exception_is_retried(saga_harness: MakeHarness, calls: Calls) -> None:
    """Failure(exception) is treated like the exception: retried by the policy."""
    saga = Saga("flaky")
    attempts = {"n": 0}

    @saga.step(retry=FAST)
    def only(ctx: StepContext) -> object:
        attempts["n"] += 1
        return Failure(ConnectionError("reset")) if attempts["n"] < 3 else "ok"

    h = saga_harness([saga])
    assert run_to_end(h, "flaky").run.status is RunStatus.COMPLETED
    assert attempts["n"] == 3


def test_timeout_counts_as_a_failed_attempt(saga_harness: MakeHarness) -> None:
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

    h = saga_harness([saga])
    snap = run_to_end(h, "slow")
    release.set()
    assert snap.run.status is RunStatus.COMPLETED
    assert attempts["n"] == 2


def test_duplicate_delivery_of_every_message_changes_nothing(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """Redelivering every message of a finished run (execute, retry, compensate) is a no-op."""
    h = saga_harness([linear_saga(calls, fail_at="c")])
    snap = run_to_end(h)
    before = dict(calls)
    kinds = {m.action for m, _ in h.handled}
    assert kinds == {Action.EXECUTE, Action.COMPENSATE}
    for message, _ in list(h.handled):
        assert h.deliver(message).is_done
    h.pump()
    assert dict(calls) == before
    assert h.engine.runs.get(snap.run.run_id) == snap


def test_duplicate_delivery_mid_run_does_not_repeat_steps(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """Delivering each message twice while the run progresses runs each step once."""
    h = saga_harness([linear_saga(calls)])
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


def test_delivery_while_lease_is_held_asks_to_retry_later(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """A second delivery during a live attempt gets retry-later with the lease's remaining time."""
    saga = Saga("held")
    h: SagaHarness

    @saga.step(timeout_seconds=10)
    def only(ctx: StepContext) -> None:
        nested = h.deliver(h.message(ctx.run_id, ctx.step))
        assert not nested.is_done
        assert nested.retry_after_seconds == pytest.approx(10 + h.settings.lease_grace_seconds)
        calls.hit("only")

    h = saga_harness([saga])
    assert run_to_end(h, "held").run.status is RunStatus.COMPLETED
    assert calls["only"] == 1


def test_commit_after_lost_lease_is_fenced_out(saga_harness: MakeHarness, calls: Calls) -> None:
    """A worker whose lease expired and was taken over cannot commit its stale result."""
    saga = Saga("fenced")
    h: SagaHarness

    @saga.step(timeout_seconds=5)
    def slow(ctx: StepContext) -> int:
        calls.hit("slow")
        if ctx.attempt == 1:
            h.clock.advance(60)  # the lease runs out while this attempt is "stuck"
            assert h.deliver(h.message(ctx.run_id, ctx.step)).is_done
        return ctx.attempt

    @saga.step
    def after(ctx: StepContext) -> None:
        calls.hit("after")

    h = saga_harness([saga])
    snap = run_to_end(h, "fenced")
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("slow").output == 2  # the takeover's result, not the stale one
    assert calls == Counter(slow=2, after=1)
    stale = [r for m, r in h.handled if r.outcome is Outcome.DISCARDED]
    assert len(stale) == 1


class CrashOnEnqueue:
    """A pull queue whose next enqueue, once armed, 'kills the process' (after the commit)."""

    def __init__(self) -> None:
        self.armed = False

    def wrap(self, inner: PullQueue) -> CrashOnEnqueue:
        self.inner = inner
        return self

    def enqueue(self, *, messages: Any) -> None:
        if self.armed:
            self.armed = False
            raise SystemExit("crash between commit and enqueue")
        self.inner.enqueue(messages=messages)

    def describe(self) -> Any:
        return self.inner.describe()

    def lease_due(self, *, now: float, limit: int, lease_seconds: float) -> Any:
        return self.inner.lease_due(now=now, limit=limit, lease_seconds=lease_seconds)

    def ack(self, *, receipts: Any) -> None:
        self.inner.ack(receipts=receipts)

    def release(self, *, receipt: str, delay_seconds: float) -> None:
        self.inner.release(receipt=receipt, delay_seconds=delay_seconds)

    def pending_count(self) -> int:
        return self.inner.pending_count()


def test_crash_between_commit_and_enqueue_heals_on_redelivery(
    saga_harness: MakeHarness, calls: Calls, engine_enqueues: None
) -> None:
    """If the worker dies after committing but before enqueuing, redelivery re-drives."""
    crashing = CrashOnEnqueue()
    h = saga_harness([linear_saga(calls)], wrap_queue=crashing.wrap)
    started = h.start("linear", {})
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


def test_lost_worker_is_replaced_after_lease_expiry(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """A step whose worker vanished mid-attempt is claimed again once its lease expires."""
    h = saga_harness([linear_saga(calls)])
    started = h.start("linear", {})
    h.abandon_claim(started.run.run_id, "a", lease_seconds=6)
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("a").attempt == 2


def test_compensation_that_fails_then_succeeds_is_retried(
    saga_harness: MakeHarness, calls: Calls
) -> None:
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

    h = saga_harness([saga])
    snap = run_to_end(h, "undo-flaky")
    assert snap.run.status is RunStatus.COMPENSATED
    assert tries["n"] == 3
    assert snap.step("a").status is StepStatus.COMPENSATED


def test_compensation_that_never_succeeds_fails_the_run_and_retry_finishes_it(
    saga_harness: MakeHarness,
) -> None:
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

    h = saga_harness([saga])
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


def test_retry_is_refused_for_runs_that_did_not_fail(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """Only FAILED runs can be retried by hand."""
    h = saga_harness([linear_saga(calls)])
    snap = run_to_end(h)
    with pytest.raises(InvalidRunStateError):
        h.engine.runs.retry(snap.run.run_id)


def test_cancel_before_any_step_ends_cancelled_without_compensation(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """Cancelling a run that has not started a step ends it CANCELLED at once."""
    h = saga_harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    assert h.engine.runs.cancel(started.run.run_id).status is RunStatus.CANCELLED
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.CANCELLED
    assert not calls
    assert {s.status for s in snap.steps.values()} == {StepStatus.SKIPPED}


def test_cancel_mid_run_undoes_finished_steps_then_ends_cancelled(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """Cancelling after some steps compensates them in reverse and ends CANCELLED."""
    h = saga_harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    h.deliver_due()  # a
    h.deliver_due()  # b
    h.engine.runs.cancel(started.run.run_id)
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status is RunStatus.CANCELLED
    assert calls.order == ["a", "b", "undo_b", "undo_a"]
    assert snap.step("c").status is StepStatus.SKIPPED


def test_same_idempotency_key_returns_the_same_run(saga_harness: MakeHarness, calls: Calls) -> None:
    """Starting twice with one key gives one run; a different input under it is refused."""
    h = saga_harness([linear_saga(calls)])
    first = h.engine.runs.start("linear", {"n": 1}, idempotency_key="k1")
    second = h.engine.runs.start("linear", {"n": 1}, idempotency_key="k1")
    assert first.is_created and not second.is_created
    assert first.run.run_id == second.run.run_id
    with pytest.raises(IdempotencyKeyReusedError):
        h.engine.runs.start("linear", {"n": 2}, idempotency_key="k1")
    h.pump()
    assert dict(calls) == {"a": 1, "b": 1, "c": 1}


def test_invalid_input_and_unknown_saga_write_nothing(saga_harness: MakeHarness) -> None:
    """A rejected start raises a specific error and creates no run and no message."""

    class In(BaseModel):
        amount: int

    saga = Saga("typed", input_model=In)

    @saga.step
    def only(ctx: StepContext) -> int:
        return int(ctx.input.amount)

    h = saga_harness([saga])
    with pytest.raises(InputValidationError) as info:
        h.engine.runs.start("typed", {"amount": "lots"})
    assert info.value.errors[0]["loc"] == ["amount"]
    with pytest.raises(UnknownSagaError):
        h.engine.runs.start("nope", {})
    assert h.store.list_runs() == [] and h.queue.pending_count() == 0
    assert run_to_end(h, "typed", {"amount": 5}).run.output == {"only": 5}


def test_definition_drift_fails_the_run_naming_the_missing_step(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """A worker whose saga lacks a step the run still needs fails it with that step's name."""
    old = linear_saga(calls, name="drift")
    h = saga_harness([old])
    started = h.start("drift", {})
    new = Saga("drift")

    @new.step
    def a(ctx: StepContext) -> None:
        calls.hit("new_a")

    with h.worker([new]) as redeployed:  # a worker whose definition lost steps b and c
        redeployed.pump()
    snap = h.snapshot(started.run.run_id)
    assert snap.run.status is RunStatus.FAILED
    assert "no longer has step(s) b, c" in (snap.run.error or "")
    h.engine.runs.retry(started.run.run_id)  # on the worker that has the steps again
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_sweeper_redrives_a_run_whose_message_was_lost(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """If a run's message vanishes, the sweeper re-creates it once the run looks stuck."""
    h = saga_harness([linear_saga(calls)])
    started = h.engine.runs.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    h.queue.ack(receipts=[item.receipt])  # the message is gone, nothing ran
    assert h.engine.sweeper.sweep(stale_after_seconds=60).redriven == 0  # not stale yet
    h.clock.advance(120)
    assert h.engine.sweeper.sweep(stale_after_seconds=60).redriven == 1
    h.pump()
    assert h.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_large_outputs_go_through_the_io_manager(saga_harness: MakeHarness) -> None:
    """An output above the inline limit is stored by reference and read back transparently."""
    saga = Saga("big")

    @saga.step
    def produce(ctx: StepContext) -> list[int]:
        return list(range(50_000))

    @saga.step
    def consume(ctx: StepContext) -> int:
        return sum(ctx.outputs["produce"])

    h = saga_harness([saga])
    snap = run_to_end(h, "big")
    assert snap.run.status is RunStatus.COMPLETED
    assert "$ref" in snap.step("produce").output
    assert snap.step("consume").output == sum(range(50_000))


def test_non_json_output_fails_the_step_without_retry(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """A step returning something that is not JSON fails at once with a clear message."""
    saga = Saga("weird")

    @saga.step
    def only(ctx: StepContext) -> object:
        calls.hit("only")
        return object()

    h = saga_harness([saga])
    snap = run_to_end(h, "weird")
    assert snap.run.status is RunStatus.COMPENSATED
    assert "not JSON" in (snap.step("only").error or "")
    assert calls["only"] == 1


def test_crashes_that_exhaust_the_budget_lead_to_compensation(
    saga_harness: MakeHarness, calls: Calls
) -> None:
    """Attempts lost to crashes count against the retry budget, so a poison step ends."""
    h = saga_harness([linear_saga(calls)])
    run_id = h.start("linear", {}).run.run_id
    h.deliver_due()  # a succeeds
    h.deliver_due()  # b succeeds
    h.abandon_claim(run_id, "c", claims=3)  # three workers claimed c and died
    h.pump()
    snap = h.engine.runs.get(run_id)
    assert snap.run.status is RunStatus.COMPENSATED
    assert "lost its lease" in (snap.step("c").error or "")
    assert calls.order == ["a", "b", "undo_c", "undo_b", "undo_a"]


def test_a_result_the_store_refuses_fails_the_step_for_good(
    saga_harness: MakeHarness, request: pytest.FixtureRequest
) -> None:
    """An output over the store's record limit (inline limit set too high) fails at once.

    Stores with a record limit (DynamoDB 400 KB, Firestore 1 MiB) refuse the commit; the
    step then fails without retries and the run compensates, instead of re-running the
    step until its attempts run out. Stores without a limit keep the output.
    """
    backend = request.node.callspec.params["store_and_queue"]
    saga = Saga("bulky")
    undone: list[str] = []

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0))
    def prepare(ctx: StepContext) -> str:
        return "ready"

    @prepare.compensation
    def unprepare(ctx: StepContext) -> None:
        undone.append("prepare")

    @saga.step(retry=RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0))
    def report(ctx: StepContext) -> str:
        return "x" * (1300 * 1024)

    limit = RunnerSettings(lease_grace_seconds=1.0, inline_output_limit_bytes=4 * 1024 * 1024)
    h = saga_harness([saga], settings=limit)
    snap = h.run("bulky", {})
    if backend in ("memory_store", "sqlite_store"):
        assert snap.run.status is RunStatus.COMPLETED
        return
    assert snap.run.status is RunStatus.COMPENSATED
    assert snap.step("report").status is StepStatus.COMPENSATED or (
        snap.step("report").status is StepStatus.FAILED
    )
    assert snap.step("report").execute_attempts == 1
    assert "could not be stored" in (snap.step("report").error or snap.run.error or "")
    assert undone == ["prepare"]
