"""The bundle's event, wait and schedule examples on the memory backend with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.domain.status import RunStatus, StepStatus
from core.testing import SagaHarness
from functions.demo_services import db, emails
from functions.sagas import fulfilment, onboarding, stock_report
from infra.memory.harness import memory_harness

ORDER = {"order_id": "o-42", "email": "ada@example.com"}


@pytest.fixture(name="harness")
def fixture_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SagaHarness]:
    """The three example sagas against a fresh demo database."""
    monkeypatch.setenv("RELAY_DATA_DIR", str(tmp_path))
    db.reset()
    with memory_harness([fulfilment.saga, onboarding.saga, stock_report.saga]) as h:
        yield h
    db.close_all()


def test_fulfilment_waits_for_the_pickup_event_then_sleeps_then_asks_for_a_review(
    harness: SagaHarness,
) -> None:
    """Started with the order id as key, the run parks until an event names that order."""
    run_id = harness.engine.runs.start("fulfilment", ORDER, idempotency_key="o-42").run.run_id
    harness.drain()
    parked = harness.engine.runs.get(run_id)
    assert parked.run.status is RunStatus.WAITING
    assert parked.step("courier_pickup").status is StepStatus.RUNNING

    other = harness.engine.triggers.publish(
        topic="couriers.dhl.picked_up", data={"order_id": "o-7"}, event_id="e-0"
    )
    outcome = harness.engine.triggers.publish(
        topic="couriers.dhl.picked_up", data={"order_id": "o-42", "carrier": "DHL"}, event_id="e-1"
    )
    harness.drain()
    assert harness.engine.runs.get(run_id).run.status is RunStatus.WAITING  # the sleep
    harness.advance(fulfilment.DELIVERY_WINDOW_SECONDS)
    harness.drain()

    assert other.resumed == [] and outcome.resumed == [run_id]
    done = harness.engine.runs.get(run_id)
    assert done.run.status is RunStatus.COMPLETED
    assert done.step("courier_pickup").output == {"order_id": "o-42", "carrier": "DHL"}
    woke_at = done.step("delivery_window").output["woke_at"]
    assert woke_at >= done.step("courier_pickup").finished_at + fulfilment.DELIVERY_WINDOW_SECONDS
    review = emails.get(f"{run_id}:request_review", fulfilment.REVIEW)
    assert review is not None and review.subject == "How was your delivery with DHL?"
    assert not [v for check in fulfilment.saga.invariants for v in check(done)]


def test_fulfilment_without_a_pickup_tells_the_customer_of_the_delay(harness: SagaHarness) -> None:
    """No event before the timeout: the wait fails and the sent notice is followed up."""
    run_id = harness.engine.runs.start("fulfilment", ORDER, idempotency_key="o-42").run.run_id
    harness.drain()

    harness.advance(fulfilment.PICKUP_TIMEOUT_SECONDS + 1)
    harness.pump()

    done = harness.engine.runs.get(run_id)
    assert done.run.status is RunStatus.COMPENSATED
    assert "no event on 'couriers.*.picked_up'" in (done.step("courier_pickup").error or "")
    delay = emails.get(f"{run_id}:announce_dispatch", fulfilment.DELAY)
    assert delay is not None and delay.is_sent
    assert not [v for check in fulfilment.saga.invariants for v in check(done)]


def test_a_sign_up_event_starts_one_onboarding_run(harness: SagaHarness) -> None:
    """``users.*.signed_up`` starts onboarding with the event data; a redelivery starts no other."""
    data = {"email": "ada@example.com", "name": "Ada"}
    first = harness.engine.triggers.publish(topic="users.u-7.signed_up", data=data, event_id="e-7")
    again = harness.engine.triggers.publish(topic="users.u-7.signed_up", data=data, event_id="e-7")
    harness.pump()

    (started,) = first.started
    assert [r.run.run_id for r in again.started] == [started.run.run_id]
    assert not again.started[0].is_created
    assert harness.engine.runs.get(started.run.run_id).run.status is RunStatus.COMPLETED


def test_the_daily_stock_report_fires_once_per_scheduled_time(harness: SagaHarness) -> None:
    """The schedule starts one run per time, which mails the SKUs below the threshold."""
    (declared,) = stock_report.saga.schedules
    assert (declared.name, declared.cron) == ("daily-stock-report", "0 6 * * *")
    at = 1_767_247_200.0  # 2026-01-01T06:00:00Z
    first = harness.engine.triggers.fire_schedule(name="daily-stock-report", scheduled_at=at)
    again = harness.engine.triggers.fire_schedule(name="daily-stock-report", scheduled_at=at)
    harness.pump()

    assert again.run.run_id == first.run.run_id and not again.is_created
    done = harness.engine.runs.get(first.run.run_id)
    assert done.run.status is RunStatus.COMPLETED
    assert done.step("count_stock").output["low"] == []  # the seeded stock is plentiful
    assert done.step("send_report").output["low_skus"] == 0


def test_the_stock_report_lists_skus_below_the_threshold_lowest_first(harness: SagaHarness) -> None:
    run_id = harness.engine.runs.start(
        "stock_report", {"recipient": "ops@example.com", "low_stock_below": 10**7}
    ).run.run_id
    harness.pump()

    low = harness.engine.runs.get(run_id).step("count_stock").output["low"]
    assert [item["sku"] for item in low] == sorted(item["sku"] for item in low)
    assert len(low) == 5
    report = emails.get(f"{run_id}:send_report", stock_report.REPORT)
    assert report is not None and report.subject == "5 SKU(s) low on stock"
