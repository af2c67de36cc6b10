"""What a run tells its reader: current errors, attempt counts, outcomes, message sagas.

Attempt counts are split between a step and its compensation; a retried run's error is
current; every delivery reports the branch it took; every message names its saga.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core import NonRetryableStepError, RetryPolicy, RunStatus, Saga, StepContext, StepStatus
from core.domain.records import Message
from core.domain.status import Action
from core.engine.saga_runner import Outcome
from infra.memory.harness import memory_harness
from tests.support.sagas import Calls, linear_saga

TWO = RetryPolicy(max_attempts=2, initial_delay_seconds=1.0, jitter=0.0)


@dataclass
class Inventory:
    """Whether releasing a reservation fails, and the reasons each release was told."""

    is_down: bool
    reasons: list[str | None] = field(default_factory=list)


def payment_saga(calls: Calls, inventory: Inventory) -> Saga:
    """reserve -> charge; charge is declined; releasing fails while the inventory is down."""
    saga = Saga("pay")

    @saga.step
    def reserve(ctx: StepContext) -> str:
        calls.hit("reserve")
        return "held"

    @reserve.compensation(retry=TWO)
    def release(ctx: StepContext) -> None:
        calls.hit("release")
        inventory.reasons.append(ctx.error)
        if inventory.is_down:
            raise RuntimeError("inventory service down")

    @saga.step(retry=RetryPolicy(max_attempts=1))
    def charge(ctx: StepContext) -> None:
        calls.hit("charge")
        raise NonRetryableStepError("card declined")

    @charge.compensation
    def refund(ctx: StepContext) -> None:
        calls.hit("refund")

    return saga


def test_a_failed_step_counts_its_attempts_apart_from_its_compensation() -> None:
    """A step declined once and then compensated shows 1 attempt and 1 compensation attempt."""
    calls = Calls()
    h = memory_harness([payment_saga(calls, Inventory(is_down=False))])
    run_id = h.engine.runs.start("pay", {}).run.run_id
    h.pump()
    snapshot = h.engine.runs.get(run_id)
    charge = snapshot.step("charge")
    assert snapshot.run.status is RunStatus.COMPENSATED
    assert (charge.status, charge.attempt) == (StepStatus.COMPENSATED, 2)
    assert (charge.execute_attempts, charge.compensation_attempts) == (1, 1)
    assert "failed after 1 attempt(s)" in (snapshot.run.error or "")


def test_a_compensation_out_of_attempts_names_its_own_last_attempt() -> None:
    """A compensation allowed two attempts fails 'on attempt 2', not on the step's count."""
    calls = Calls()
    h = memory_harness([payment_saga(calls, Inventory(is_down=True))])
    run_id = h.engine.runs.start("pay", {}).run.run_id
    h.pump()
    snapshot = h.engine.runs.get(run_id)
    reserve = snapshot.step("reserve")
    assert snapshot.run.status is RunStatus.FAILED
    assert calls["release"] == 2
    assert (reserve.execute_attempts, reserve.compensation_attempts) == (1, 2)
    assert "compensation of step 'reserve'" in (snapshot.run.error or "")
    assert "failed on attempt 2" in (snapshot.run.error or "")
    assert "relay runs retry" in (snapshot.run.error or "")


def test_a_retried_run_that_ends_compensated_no_longer_asks_for_a_retry() -> None:
    """After a manual retry fixes the compensation, the error is the original failure again."""
    calls, inventory = Calls(), Inventory(is_down=True)
    h = memory_harness([payment_saga(calls, inventory)])
    run_id = h.engine.runs.start("pay", {}).run.run_id
    h.pump()
    failed = h.engine.runs.get(run_id).run
    assert failed.status is RunStatus.FAILED
    inventory.is_down = False
    retried = h.engine.runs.retry(run_id)
    assert retried.status is RunStatus.COMPENSATING
    assert retried.error == failed.compensation_reason
    h.pump()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.COMPENSATED
    assert "relay runs retry" not in (snapshot.run.error or "")
    reason = (
        "step 'charge' failed after 1 attempt(s): NonRetryableStepError: "
        "details withheld; see error_detail"
    )
    assert snapshot.run.error == reason
    assert "card declined" in (snapshot.step("charge").error_detail or "")
    # Every compensation attempt, before and after the retry, was told the same reason.
    assert inventory.reasons == [reason] * 3
    assert snapshot.step("reserve").compensation_attempts == 3


def test_every_message_the_engine_writes_names_its_saga() -> None:
    """Execute, retry, compensate and wake-up messages all carry the run's saga."""
    calls = Calls()
    sleeper = Saga("sleeper")
    sleeper.step(lambda ctx: None, name="first")
    sleeper.sleep("nap", seconds=60)
    sleeper.step(lambda ctx: None, name="last")
    h = memory_harness([linear_saga(calls, fail_at="c"), sleeper])
    h.engine.runs.start("linear", {})
    h.engine.runs.start("sleeper", {})
    h.pump()
    actions = {(m.saga, m.action) for m, _ in h.handled}
    assert {m.saga for m, _ in h.handled} == {"linear", "sleeper"}
    assert ("linear", Action.COMPENSATE) in actions and ("sleeper", Action.RESUME) in actions
    assert all(m.saga == h.engine.runs.get(m.run_id).run.saga for m, _ in h.handled)


def test_a_message_without_a_saga_is_run_with_the_saga_of_its_run() -> None:
    """A format-1 message in flight during an upgrade is handled as before."""
    calls = Calls()
    h = memory_harness([linear_saga(calls)])
    run_id = h.engine.runs.start("linear", {}).run.run_id
    legacy = Message.from_json({"run_id": run_id, "step": "a", "action": "execute", "attempt": 1})
    assert h.deliver(legacy).outcome is Outcome.COMMITTED
    h.pump()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPLETED
    assert dict(calls) == {"a": 1, "b": 1, "c": 1}


def test_a_message_naming_another_saga_is_dropped_untouched() -> None:
    """Run ids are unique, so a message whose saga is not its run's was not written by Relay."""
    calls = Calls()
    h = memory_harness([linear_saga(calls)])
    run_id = h.engine.runs.start("linear", {}).run.run_id
    before = h.engine.runs.get(run_id)
    forged = Message(run_id, before.step("a").name, Action.EXECUTE, 1, saga="other")
    assert h.deliver(forged).outcome is Outcome.DROPPED
    assert h.engine.runs.get(run_id) == before and calls["a"] == 0


def test_deliveries_report_what_they_did() -> None:
    """Outcomes name the branch taken: commit, re-drive, retry later, drop, park."""
    calls = Calls()
    sleeper = Saga("sleeper")
    sleeper.sleep("nap", seconds=60)
    h = memory_harness([linear_saga(calls), sleeper])
    run_id = h.engine.runs.start("linear", {}).run.run_id
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    assert h.deliver(item.message).outcome is Outcome.COMMITTED
    assert h.deliver(item.message).outcome is Outcome.REDRIVEN  # a duplicate
    early = Message(run_id, item.message.step, Action.EXECUTE, 1, saga="linear")
    assert h.deliver(Message.from_json({**early.to_json(), "step": "c"})).outcome is (
        Outcome.DROPPED  # c's dependency b has not run: b will enqueue it
    )
    assert h.deliver(Message(run_id, "nope", Action.EXECUTE, 1)).outcome is Outcome.DROPPED  # type: ignore[arg-type]
    sleep_run = h.engine.runs.start("sleeper", {}).run.run_id
    nap = Message(sleep_run, h.engine.runs.get(sleep_run).step("nap").name, Action.EXECUTE, 1)
    assert h.deliver(nap).outcome is Outcome.PARKED
    wake = Message(sleep_run, nap.step, Action.RESUME, 1, saga="sleeper")
    result = h.deliver(wake)
    assert result.outcome is Outcome.RETRY_LATER and not result.is_done
