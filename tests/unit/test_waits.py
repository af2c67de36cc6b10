"""Durable sleeps and waits for events: parked without a worker, woken by a message."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.context import StepContext
from core.domain.records import Message
from core.domain.saga import MAX_WAIT_SECONDS, CompensationDefinition, Saga
from core.domain.status import Action, RunStatus, StepStatus
from core.errors import DefinitionError
from core.registry import SagaRegistry
from tests.unit.harness import Harness
from tooling.manifest import build_manifest

HOUR = 3600.0


def sleeper() -> Saga:
    saga = Saga("sleeper")
    saga.step(lambda ctx: {"before": True}, name="before")
    saga.sleep("nap", seconds=HOUR)
    saga.step(lambda ctx: {"after": ctx.outputs["nap"]["woke_at"]}, name="after")
    return saga


def test_a_sleep_parks_the_run_and_its_wake_up_resumes_it() -> None:
    h = Harness([sleeper()])
    run_id = h.engine.runs.start("sleeper", {}).run.run_id
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.WAITING
    assert snapshot.step("nap").status is StepStatus.RUNNING
    assert snapshot.step("after").status is StepStatus.PENDING
    parked_at = h.clock.now()

    h.clock.advance(HOUR - 1)
    assert h.drain() == 0  # the wake-up is not due; nothing is polled meanwhile
    h.clock.advance(2)
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("nap").output["woke_at"] >= parked_at + HOUR


def test_a_duplicate_delivery_during_a_sleep_changes_nothing() -> None:
    h = Harness([sleeper()])
    run_id = h.engine.runs.start("sleeper", {}).run.run_id
    h.drain()
    before = h.engine.runs.get(run_id)
    nap = before.step("nap")
    again = h.deliver(Message(run_id, nap.name, Action.EXECUTE, nap.attempt))
    early = h.deliver(Message(run_id, nap.name, Action.RESUME, nap.attempt))
    assert again.is_done
    assert not early.is_done and early.retry_after_seconds == pytest.approx(HOUR, abs=1)
    after = h.engine.runs.get(run_id)
    assert after.step("nap") == nap and after.run == before.run


def test_the_sweeper_restores_a_lost_wake_up() -> None:
    h = Harness([sleeper()])
    run_id = h.engine.runs.start("sleeper", {}).run.run_id
    h.drain()
    lost = h.queue.lease_due(now=h.clock.now() + 2 * HOUR, limit=10, lease_seconds=60.0)
    assert [item.message.action for item in lost] == [Action.RESUME]
    h.queue.ack(receipts=[item.receipt for item in lost])  # e.g. a queue purged by hand
    # Before the deadline nothing says the wake-up is lost: the sweeper sends nothing.
    assert h.engine.sweeper.sweep(stale_after_seconds=0.0).redriven == 0
    h.clock.advance(HOUR + 1)
    assert h.engine.sweeper.sweep(stale_after_seconds=0.0).redriven == 1
    h.drain()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPLETED


def payment_saga(compensated: list[str]) -> Saga:
    saga = Saga("checkout")

    @saga.step
    def reserve(ctx: StepContext) -> dict[str, str]:
        return {"reservation": ctx.idempotency_key}

    @reserve.compensation
    def release(ctx: StepContext) -> None:
        compensated.append(ctx.run_id)

    saga.wait_for_event(
        "paid",
        topic="payments.*",
        correlation=lambda event: event["data"].get("order_id"),
        timeout_seconds=2 * HOUR,
    )

    @saga.step
    def ship(ctx: StepContext) -> dict[str, Any]:
        return {"amount": ctx.outputs["paid"]["amount"]}

    return saga


def test_an_event_resumes_the_run_its_correlation_id_names() -> None:
    h = Harness([payment_saga([])])
    run_id = h.engine.runs.start("checkout", {}, idempotency_key="order-42").run.run_id
    h.drain()
    assert h.engine.runs.get(run_id).run.status is RunStatus.WAITING

    other = h.engine.triggers.publish(
        topic="payments.confirmed", data={"order_id": "order-7", "amount": 1}, event_id="e0"
    )
    assert other.resumed == []
    outcome = h.engine.triggers.publish(
        topic="payments.confirmed", data={"order_id": "order-42", "amount": 5}, event_id="e1"
    )
    assert outcome.resumed == [run_id]
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("paid").output == {"order_id": "order-42", "amount": 5}
    assert snapshot.step("ship").output == {"amount": 5}

    redelivered = h.engine.triggers.publish(
        topic="payments.confirmed", data={"order_id": "order-42", "amount": 9}, event_id="e1"
    )
    assert redelivered.resumed == []
    assert h.engine.runs.get(run_id).step("paid").output["amount"] == 5


def test_an_event_that_arrives_before_the_run_waits_is_kept() -> None:
    h = Harness([payment_saga([])])
    run_id = h.engine.runs.start("checkout", {}, idempotency_key="order-1").run.run_id
    kept = h.engine.triggers.publish(
        topic="payments.confirmed", data={"order_id": "order-1", "amount": 3}, event_id="e1"
    )
    assert kept.resumed == [run_id]
    second = h.engine.triggers.publish(
        topic="payments.confirmed", data={"order_id": "order-1", "amount": 4}, event_id="e2"
    )
    assert second.resumed == []  # the first event wins
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("ship").output == {"amount": 3}


def test_no_event_before_the_timeout_fails_the_step_and_compensates() -> None:
    compensated: list[str] = []
    h = Harness([payment_saga(compensated)])
    run_id = h.engine.runs.start("checkout", {}, idempotency_key="order-9").run.run_id
    h.drain()
    h.clock.advance(2 * HOUR + 1)
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.COMPENSATED
    assert snapshot.step("paid").status is StepStatus.FAILED
    assert "no event on 'payments.*'" in (snapshot.step("paid").error or "")
    assert compensated == [run_id]
    late = h.engine.triggers.publish(
        topic="payments.confirmed", data={"order_id": "order-9", "amount": 1}, event_id="late"
    )
    assert late.resumed == []


def test_the_default_correlation_is_the_run_id_in_the_event_data() -> None:
    saga = Saga("approval")
    saga.wait_for_event("approved", topic="approvals.**")
    saga.step(lambda ctx: ctx.outputs["approved"]["by"], name="record")
    h = Harness([saga])
    run_id = h.engine.runs.start("approval", {}).run.run_id
    h.drain()
    outcome = h.engine.triggers.publish(
        topic="approvals.hr.granted", data={"correlation_id": run_id, "by": "ana"}, event_id="a1"
    )
    assert outcome.resumed == [run_id]
    h.drain()
    assert h.engine.runs.get(run_id).step("record").output == "ana"


def test_cancelling_a_waiting_run_stops_the_wait_and_compensates() -> None:
    compensated: list[str] = []
    h = Harness([payment_saga(compensated)])
    run_id = h.engine.runs.start("checkout", {}, idempotency_key="order-5").run.run_id
    h.drain()
    h.engine.runs.cancel(run_id)
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.CANCELLED
    assert snapshot.step("paid").status is StepStatus.SKIPPED
    assert compensated == [run_id]
    h.clock.advance(3 * HOUR)
    assert h.drain() == 1  # the old TIMEOUT message is acknowledged and changes nothing
    assert h.engine.runs.get(run_id).run.status is RunStatus.CANCELLED


def test_a_parallel_branch_keeps_the_run_running_while_another_waits() -> None:
    saga = Saga("branches")
    saga.step(lambda ctx: 1, name="start")
    saga.sleep("nap", seconds=HOUR)
    saga.step(lambda ctx: 2, name="work", parallel=True)
    saga.step(lambda ctx: 3, name="join", after=["nap", "work"])
    h = Harness([saga])
    run_id = h.engine.runs.start("branches", {}).run.run_id
    h.drain()
    snapshot = h.engine.runs.get(run_id)
    assert snapshot.step("work").status is StepStatus.SUCCEEDED
    assert snapshot.run.status is RunStatus.WAITING
    h.clock.advance(HOUR + 1)
    h.drain()
    assert h.engine.runs.get(run_id).run.status is RunStatus.COMPLETED


@pytest.mark.parametrize("seconds", [0, -1, MAX_WAIT_SECONDS + 1])
def test_a_sleep_outside_its_limits_is_refused(seconds: float) -> None:
    with pytest.raises(DefinitionError, match="seconds of step 'nap'"):
        Saga("s").sleep("nap", seconds=seconds)


def test_a_wait_step_has_no_compensation_and_needs_a_valid_topic() -> None:
    saga = Saga("s")
    with pytest.raises(DefinitionError, match="invalid segment"):
        saga.wait_for_event("w", topic="bad topic")
    saga.wait_for_event("w", topic="a.b")
    with pytest.raises(DefinitionError, match="only waits"):
        saga.set_compensation("w", CompensationDefinition(fn=lambda ctx: None))


def test_the_manifest_lists_wait_steps_and_the_topics_they_resume_on() -> None:
    registry = SagaRegistry()
    registry.register(payment_saga([]))
    registry.register(sleeper())
    manifest = build_manifest(registry)
    kinds = {
        f"{saga['name']}.{step['name']}": (step["kind"], step["wait"])
        for saga in manifest["sagas"]
        for step in saga["steps"]
    }
    assert kinds["sleeper.nap"] == (
        "sleep",
        {"sleep_seconds": HOUR, "topic": None, "timeout_seconds": None},
    )
    assert kinds["checkout.paid"][0] == "event"
    assert kinds["checkout.reserve"] == ("task", None)
    assert {
        "pattern": "payments.*",
        "saga": "checkout",
        "starts": False,
        "resumes": "paid",
    } in manifest["events"]
