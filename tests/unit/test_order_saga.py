"""Tests for the bundle's order and onboarding sagas on the memory backend with a fixed clock."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.domain.context import StepContext
from core.domain.records import RunSnapshot
from core.domain.status import Action, RunStatus, StepStatus
from core.errors import InputValidationError
from core.faults import FaultPlan
from core.testing import SagaHarness
from functions.demo_services import db, emails, inventory, payments, users
from functions.sagas import onboarding, order
from infra.memory.harness import memory_harness

REPO_ROOT = Path(__file__).resolve().parents[2]
ORDER_STEPS = [
    "validate_order",
    "reserve_inventory",
    "charge_payment",
    "create_order",
    "send_confirmation",
]


@pytest.fixture(name="demo_db")
def fixture_demo_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh demo database in a temporary RELAY_DATA_DIR, closed after the test."""
    monkeypatch.setenv("RELAY_DATA_DIR", str(tmp_path))
    db.reset()
    yield tmp_path
    db.close_all()


@pytest.fixture(name="harness")
def fixture_harness(demo_db: Path) -> Iterator[SagaHarness]:
    """A harness serving both bundle sagas against the fresh demo database."""
    h = memory_harness([order.saga, onboarding.saga])
    yield h
    h.close()


def order_input(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "customer_id": "cust-1",
        "email": "ada@example.com",
        "items": [{"sku": "SKU-MUG", "quantity": 2}, {"sku": "SKU-LAMP", "quantity": 1}],
        "payment_token": order.GOOD_TOKEN,
        "currency": "USD",
    }
    base.update(changes)
    return base


EXPECTED_TOTAL = 2 * 899 + 4_999


def run_saga(h: SagaHarness, saga: str, raw: dict[str, Any]) -> RunSnapshot:
    run_id = h.engine.runs.start(saga, raw).run.run_id
    h.pump()
    return h.engine.runs.get(run_id)


def violations(snapshot: RunSnapshot) -> list[str]:
    saga = order.saga if snapshot.run.saga == "order" else onboarding.saga
    return [v for invariant in saga.invariants for v in invariant(snapshot)]


def undo_actions(run_id: str) -> list[tuple[str, str, str]]:
    """The journal entries of a run that undo something, as (service, action, step)."""
    doing = {"validate", "reserve", "charge", "create", "send order_confirmation"}
    return [
        (e.service, e.action, e.key.rpartition(":")[2])
        for e in db.journal(f"{run_id}:")
        if e.action not in doing
    ]


def test_good_order_completes_with_its_outputs(harness: SagaHarness) -> None:
    """A valid order runs each step once, outputs order, charge and email, and passes invariants."""
    snapshot = run_saga(harness, "order", order_input())
    run = snapshot.run
    assert run.status is RunStatus.COMPLETED
    key = f"{run.run_id}:"
    assert run.output == {
        "order_id": db.stable_id("ord", key + "create_order"),
        "total_cents": EXPECTED_TOTAL,
        "currency": "USD",
        "charge_id": db.stable_id("ch", key + "charge_payment"),
        "confirmation_message_id": db.stable_id(
            "msg", key + "send_confirmation", "order_confirmation"
        ),
    }
    assert [snapshot.step(s).attempt for s in ORDER_STEPS] == [1] * 5
    assert payments.net_charged(key + "charge_payment") == EXPECTED_TOTAL
    assert inventory.products()["SKU-MUG"].stock == db.INITIAL_STOCK - 2
    assert violations(snapshot) == []
    assert order.ledger_violations([run.run_id]) == []


def test_declined_payment_compensates_in_reverse_order(harness: SagaHarness) -> None:
    """A declined payment is not retried; charge, stock and validation are undone in that order."""
    snapshot = run_saga(harness, "order", order_input(payment_token=payments.DECLINED_TOKEN))
    run = snapshot.run
    assert run.status is RunStatus.COMPENSATED
    assert run.error is not None and "PaymentDeclined" in run.error
    assert run.error.endswith("PaymentDeclined: the payment method was declined")
    charge = snapshot.step("charge_payment")
    for text in (run.error, run.error_detail, charge.error, charge.error_detail):
        assert text is not None and payments.DECLINED_TOKEN not in text
    assert "declined for payment" in (run.error_detail or "")
    assert (
        snapshot.step("charge_payment").attempt - snapshot.step("charge_payment").budget_start <= 1
    )
    assert [snapshot.step(s).status for s in ORDER_STEPS] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.SKIPPED,
        StepStatus.SKIPPED,
    ]
    assert undo_actions(run.run_id) == [
        ("payments", "void", "charge_payment"),
        ("inventory", "release", "reserve_inventory"),
        ("orders", "withdraw-validation", "validate_order"),
    ]
    assert all(level.on_hand == level.initial for level in inventory.stock_levels().values())
    assert payments.ledger().net_cents == 0
    assert violations(snapshot) == []
    assert order.ledger_violations([]) == []


def test_unknown_sku_compensates_right_after_validation(harness: SagaHarness) -> None:
    """An unknown SKU fails validation once, skips every later step, touches no stock or money."""
    items = [{"sku": "SKU-MUG", "quantity": 1}, {"sku": order.UNKNOWN_SKU, "quantity": 1}]
    snapshot = run_saga(harness, "order", order_input(items=items))
    assert snapshot.run.status is RunStatus.COMPENSATED
    assert order.UNKNOWN_SKU in (snapshot.run.error or "")
    assert snapshot.step("validate_order").status is StepStatus.COMPENSATED
    assert [snapshot.step(s).status for s in ORDER_STEPS[1:]] == [StepStatus.SKIPPED] * 4
    assert [(e.service, e.action) for e in db.journal()] == [("orders", "void-validation")]
    assert violations(snapshot) == []


def test_failing_last_step_undoes_every_step_newest_first(demo_db: Path) -> None:
    """When send_confirmation keeps failing, every step is undone in reverse declaration order."""
    h = memory_harness([order.saga], faults=FaultPlan.parse("order.send_confirmation:fail@1.0"))
    try:
        snapshot = run_saga(h, "order", order_input())
    finally:
        h.close()
    assert snapshot.run.status is RunStatus.COMPENSATED
    assert undo_actions(snapshot.run.run_id) == [
        ("emails", "suppress order_confirmation", "send_confirmation"),
        ("orders", "cancel", "create_order"),
        ("payments", "refund", "charge_payment"),
        ("inventory", "release", "reserve_inventory"),
        ("orders", "withdraw-validation", "validate_order"),
    ]
    assert violations(snapshot) == []
    assert order.ledger_violations([]) == []


def test_duplicate_deliveries_change_nothing(harness: SagaHarness) -> None:
    """Every message delivered twice on arrival, then replayed, still charges and reserves once."""
    run_id = harness.engine.runs.start("order", order_input()).run.run_id
    while True:
        batch = harness.queue.lease_due(now=harness.clock.now(), limit=10, lease_seconds=60.0)
        if not batch:
            if harness.queue.pending_count() == 0:
                break
            harness.clock.advance(0.5)
            continue
        for item in batch:
            harness.deliver(item.message)
            harness.deliver(item.message)
            harness.queue.ack(receipts=[item.receipt])
    journal_before = db.journal()
    for message, _ in list(harness.handled):
        harness.deliver(message)
    harness.pump()
    snapshot = harness.engine.runs.get(run_id)
    assert snapshot.run.status is RunStatus.COMPLETED
    assert db.journal() == journal_before
    assert [c.key for c in payments.charges()] == [f"{run_id}:charge_payment"]
    assert payments.ledger().charge_count == 1
    assert inventory.stock_levels()["SKU-MUG"].reserved == 2
    assert violations(snapshot) == []
    assert order.ledger_violations([run_id]) == []


def test_invariants_catch_a_refund_behind_the_sagas_back(harness: SagaHarness) -> None:
    """Refunding a completed order outside the saga fails the money invariant and the ledger."""
    snapshot = run_saga(harness, "order", order_input())
    run_id = snapshot.run.run_id
    payments.refund(f"{run_id}:charge_payment")
    found = violations(snapshot)
    assert len(found) == 1
    assert "refunded" in found[0]
    assert any("net charged 0" in v for v in order.ledger_violations([run_id]))


def test_invariants_flag_a_run_that_did_not_finish_cleanly(harness: SagaHarness) -> None:
    """A run in any status other than COMPLETED or COMPENSATED is reported by name."""
    snapshot = run_saga(harness, "order", order_input())
    failed = RunSnapshot(dataclasses.replace(snapshot.run, status=RunStatus.FAILED), snapshot.steps)
    assert any("ended FAILED" in v for v in violations(failed))


def test_ledger_scoped_to_a_campaign_ignores_earlier_runs(harness: SagaHarness) -> None:
    """With campaign_run_ids, money from runs outside the campaign does not unbalance the ledger."""
    earlier = run_saga(harness, "order", order_input()).run.run_id
    current = run_saga(harness, "order", order_input(customer_id="cust-2")).run.run_id
    assert order.ledger_violations([current], campaign_run_ids=[current]) == []
    assert order.ledger_violations([earlier, current]) == []
    assert order.ledger_violations([current]) != []


def test_cancellation_email_follows_a_confirmation_that_went_out(demo_db: Path) -> None:
    """The send_confirmation compensation mails a cancellation only when a confirmation was sent."""
    ctx = StepContext(
        run_id="r-1",
        saga="order",
        step="send_confirmation",
        action=Action.COMPENSATE,
        attempt=2,
        idempotency_key="r-1:send_confirmation",
        input=order_input(),
        outputs={},
        deadline_at=0.0,
    )
    emails.send(ctx.idempotency_key, "ada@example.com", order.CONFIRMATION)
    order.send_cancellation(ctx)
    order.send_cancellation(ctx)
    assert [e.kind for e in emails.outbox("r-1:")] == [order.CONFIRMATION, order.CANCELLATION]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer_id": "  "}, "customer_id"),
        ({"email": "not-an-address"}, "email"),
        ({"items": []}, "items"),
        ({"items": [{"sku": "SKU-MUG", "quantity": 0}]}, "items"),
        ({"payment_token": "4242424242424242"}, "payment_token"),
        ({"payment_token": "tok_"}, "payment_token"),
        ({"currency": "EUR"}, "currency"),
    ],
)
def test_invalid_order_input_is_rejected(
    harness: SagaHarness, changes: dict[str, Any], field: str
) -> None:
    """Input that breaks the model is rejected at start, naming the field, and nothing runs."""
    with pytest.raises(InputValidationError) as raised:
        harness.engine.runs.start("order", order_input(**changes))
    assert raised.value.errors[0]["loc"][0] == field
    assert harness.queue.pending_count() == 0


def test_demo_inputs_mix_completed_and_compensated_runs(harness: SagaHarness) -> None:
    """demo_inputs is repeatable per seed and yields valid, declined and unknown-SKU orders."""
    inputs = order.demo_inputs(12, seed=3)
    assert inputs == order.demo_inputs(12, seed=3)
    assert order.demo_inputs(0, seed=3) == []
    statuses = [run_saga(harness, "order", raw).run for raw in inputs]
    errors = [run.error or "" for run in statuses if run.status is RunStatus.COMPENSATED]
    assert sum(run.status is RunStatus.COMPLETED for run in statuses) >= 8
    assert any("PaymentDeclined" in e for e in errors)
    assert any(order.UNKNOWN_SKU in e for e in errors)
    completed = [run.run_id for run in statuses if run.status is RunStatus.COMPLETED]
    assert order.ledger_violations(completed) == []


def test_onboarding_completes(harness: SagaHarness) -> None:
    """Onboarding opens the account, sends the welcome email and passes its invariant."""
    snapshot = run_saga(harness, "onboarding", {"email": "Grace@Example.com", "name": "Grace"})
    run = snapshot.run
    assert run.status is RunStatus.COMPLETED
    user = users.get(f"{run.run_id}:create_user")
    assert user is not None
    assert user.is_active
    assert run.output == {
        "user_id": user.user_id,
        "welcome_message_id": db.stable_id("msg", f"{run.run_id}:send_welcome_email", "welcome"),
    }
    assert violations(snapshot) == []


def test_onboarding_with_a_taken_email_compensates(harness: SagaHarness) -> None:
    """A second onboarding for an active address is rejected and leaves the first account open."""
    first = run_saga(harness, "onboarding", {"email": "grace@example.com", "name": "Grace"})
    second = run_saga(harness, "onboarding", {"email": "grace@example.com", "name": "G"})
    assert second.run.status is RunStatus.COMPENSATED
    assert "EmailTaken" in (second.run.error or "")
    first_user = users.get(f"{first.run.run_id}:create_user")
    assert first_user is not None
    assert first_user.is_active
    assert violations(second) == []


def test_importing_the_saga_modules_opens_no_database(tmp_path: Path) -> None:
    """The saga modules do no I/O at import, so no demo database appears until a step runs."""
    code = "import functions.sagas.order, functions.sagas.onboarding"
    env = {"RELAY_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []
