"""Durable sleeps and waits for events on every state store: parked without a worker,
woken by a message."""

from __future__ import annotations

import pytest

from core.domain.saga import Saga
from core.domain.status import Action, RunStatus, StepStatus
from tests.support.backends.fixtures import MakeHarness
from tests.support.sagas import HOUR, payment_saga, sleeper

pytestmark = pytest.mark.protocol


def test_a_sleep_parks_the_run_and_its_wake_up_resumes_it(saga_harness: MakeHarness) -> None:
    """A sleep parks the run WAITING until its wake-up is due, then the run goes on."""
    h = saga_harness([sleeper()])
    run_id = h.start("sleeper", {}).run.run_id
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.run.status is RunStatus.WAITING
    assert snapshot.step("nap").status is StepStatus.RUNNING
    assert snapshot.step("after").status is StepStatus.PENDING
    parked_at = h.clock.now()

    h.clock.advance(HOUR - 1)
    assert h.drain() == 0  # the wake-up is not due; nothing is polled meanwhile
    h.clock.advance(2)
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("nap").output["woke_at"] >= parked_at + HOUR


def test_a_duplicate_delivery_during_a_sleep_changes_nothing(saga_harness: MakeHarness) -> None:
    """A redelivered sleep message is acknowledged and an early wake-up is told to wait."""
    h = saga_harness([sleeper()])
    run_id = h.start("sleeper", {}).run.run_id
    h.drain()
    before = h.snapshot(run_id)
    nap = before.step("nap")
    again = h.deliver(h.message(run_id, "nap", attempt=nap.attempt))
    early = h.deliver(h.message(run_id, "nap", action=Action.RESUME, attempt=nap.attempt))
    assert again.is_done
    assert not early.is_done and early.retry_after_seconds == pytest.approx(HOUR, abs=1)
    after = h.snapshot(run_id)
    assert after.step("nap") == nap and after.run == before.run


def test_the_sweeper_restores_a_lost_wake_up(saga_harness: MakeHarness) -> None:
    """When the wake-up message is lost, the sweeper enqueues it again."""
    h = saga_harness([sleeper()])
    run_id = h.start("sleeper", {}).run.run_id
    h.drain()
    lost = h.queue.lease_due(now=h.clock.now() + 2 * HOUR, limit=10, lease_seconds=60.0)
    assert [item.message.action for item in lost] == [Action.RESUME]
    h.queue.ack(receipts=[item.receipt for item in lost])  # e.g. a queue purged by hand
    # Before the deadline nothing says the wake-up is lost: the sweeper sends nothing.
    assert h.engine.sweeper.sweep(stale_after_seconds=0.0).redriven == 0
    h.clock.advance(HOUR + 1)
    assert h.engine.sweeper.sweep(stale_after_seconds=0.0).redriven == 1
    h.drain()
    assert h.snapshot(run_id).run.status is RunStatus.COMPLETED


def test_an_event_resumes_the_run_its_correlation_id_names(saga_harness: MakeHarness) -> None:
    """An event resumes only the run its correlation id names, and only once."""
    h = saga_harness([payment_saga([])])
    run_id = h.start("checkout", {}, idempotency_key="order-42").run.run_id
    h.drain()
    assert h.snapshot(run_id).run.status is RunStatus.WAITING

    other = h.publish("payments.confirmed", {"order_id": "order-7", "amount": 1}, event_id="e0")
    assert other.resumed == []
    outcome = h.publish("payments.confirmed", {"order_id": "order-42", "amount": 5}, event_id="e1")
    assert outcome.resumed == [run_id]
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("paid").output == {"order_id": "order-42", "amount": 5}
    assert snapshot.step("ship").output == {"amount": 5}

    redelivered = h.publish(
        "payments.confirmed", {"order_id": "order-42", "amount": 9}, event_id="e1"
    )
    assert redelivered.resumed == []
    assert h.snapshot(run_id).step("paid").output["amount"] == 5


def test_an_event_that_arrives_before_the_run_waits_is_kept(saga_harness: MakeHarness) -> None:
    """An early event is kept for the wait; the first one wins."""
    h = saga_harness([payment_saga([])])
    run_id = h.start("checkout", {}, idempotency_key="order-1").run.run_id
    kept = h.publish("payments.confirmed", {"order_id": "order-1", "amount": 3}, event_id="e1")
    assert kept.resumed == [run_id]
    second = h.publish("payments.confirmed", {"order_id": "order-1", "amount": 4}, event_id="e2")
    assert second.resumed == []  # the first event wins
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("ship").output == {"amount": 3}


def test_no_event_before_the_timeout_fails_the_step_and_compensates(
    saga_harness: MakeHarness,
) -> None:
    """No event by the timeout: the step fails, the run compensates, late events do nothing."""
    compensated: list[str] = []
    h = saga_harness([payment_saga(compensated)])
    run_id = h.start("checkout", {}, idempotency_key="order-9").run.run_id
    h.drain()
    h.clock.advance(2 * HOUR + 1)
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.run.status is RunStatus.COMPENSATED
    assert snapshot.step("paid").status is StepStatus.FAILED
    assert "no event on 'payments.*'" in (snapshot.step("paid").error or "")
    assert compensated == [run_id]
    late = h.publish("payments.confirmed", {"order_id": "order-9", "amount": 1}, event_id="late")
    assert late.resumed == []


def test_the_default_correlation_is_the_run_id_in_the_event_data(saga_harness: MakeHarness) -> None:
    """Without a correlation function, data["correlation_id"] names the run."""
    saga = Saga("approval")
    saga.wait_for_event("approved", topic="approvals.**")
    saga.step(lambda ctx: ctx.outputs["approved"]["by"], name="record")
    h = saga_harness([saga])
    run_id = h.start("approval", {}).run.run_id
    h.drain()
    outcome = h.publish(
        "approvals.hr.granted", {"correlation_id": run_id, "by": "ana"}, event_id="a1"
    )
    assert outcome.resumed == [run_id]
    h.drain()
    assert h.snapshot(run_id).step("record").output == "ana"


def test_cancelling_a_waiting_run_stops_the_wait_and_compensates(saga_harness: MakeHarness) -> None:
    """Cancelling a waiting run compensates it; its old timeout message changes nothing."""
    compensated: list[str] = []
    h = saga_harness([payment_saga(compensated)])
    run_id = h.start("checkout", {}, idempotency_key="order-5").run.run_id
    h.drain()
    h.engine.runs.cancel(run_id)
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.run.status is RunStatus.CANCELLED
    assert snapshot.step("paid").status is StepStatus.SKIPPED
    assert compensated == [run_id]
    h.clock.advance(3 * HOUR)
    assert h.drain() == 1  # the old TIMEOUT message is acknowledged and changes nothing
    assert h.snapshot(run_id).run.status is RunStatus.CANCELLED


def test_a_parallel_branch_keeps_the_run_running_while_another_waits(
    saga_harness: MakeHarness,
) -> None:
    """A branch beside a sleep runs at once; the run waits only for the sleep."""
    saga = Saga("branches")
    saga.step(lambda ctx: 1, name="start")
    saga.sleep("nap", seconds=HOUR)
    saga.step(lambda ctx: 2, name="work", parallel=True)
    saga.step(lambda ctx: 3, name="join", after=["nap", "work"])
    h = saga_harness([saga])
    run_id = h.start("branches", {}).run.run_id
    h.drain()
    snapshot = h.snapshot(run_id)
    assert snapshot.step("work").status is StepStatus.SUCCEEDED
    assert snapshot.run.status is RunStatus.WAITING
    h.clock.advance(HOUR + 1)
    h.drain()
    assert h.snapshot(run_id).run.status is RunStatus.COMPLETED
