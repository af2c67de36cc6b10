"""The example order saga: validate, reserve stock, charge payment, open the order, confirm.

Every step calls a demo service (``functions.demo_services``) with ``ctx.idempotency_key``, and
every step has a compensation that undoes it with the same key, so a redelivered or
retried step is the same operation to the outside world and a compensation finds exactly
what its step did. The invariants and :func:`ledger_violations` are what ``relay chaos``
checks after a campaign: no double charge, no leaked stock, a balanced ledger.

Importing this module does no I/O; the demo database opens on the first service call.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.domain.context import StepContext
from core.domain.records import RunRecord, RunSnapshot
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from core.domain.status import RunStatus
from core.result import Failure, Result, Success
from functions.demo_services import emails, inventory, orders, payments
from functions.demo_services.db import CATALOGUE

CONFIRMATION = "order_confirmation"
CANCELLATION = "order_cancellation"
STEP_TIMEOUT_SECONDS = 10.0
UNKNOWN_SKU = "SKU-DISCONTINUED"
"""A SKU the demo catalogue does not sell; ``demo_inputs`` uses it for rejected orders."""

# Service calls are idempotent, so retrying them is always safe; business rejections
# (declined payment, unknown SKU, out of stock) are NonRetryableStepError and skip retries.
_SERVICE_RETRY = RetryPolicy(max_attempts=4, initial_delay_seconds=0.5, max_delay_seconds=10.0)
_PAYMENT_RETRY = RetryPolicy(max_attempts=5, initial_delay_seconds=1.0, max_delay_seconds=30.0)
# A compensation that gives up leaves the run FAILED for a human, so undo steps try hard.
_UNDO_RETRY = RetryPolicy(max_attempts=20, initial_delay_seconds=0.5, max_delay_seconds=30.0)

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class OrderItem(BaseModel):
    """One line of an order request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: _Text
    quantity: int = Field(ge=1, le=1_000_000_000)


class OrderInput(BaseModel):
    """What a client posts to ``/v1/sagas/order/runs``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: _Text
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=254, pattern=emails.ADDRESS_PATTERN),
    ]
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    payment_token: Annotated[str, StringConstraints(pattern=payments.TOKEN_PATTERN)]
    currency: Literal["USD"] = "USD"

    def lines(self) -> tuple[tuple[str, int], ...]:
        """The items as ``(sku, quantity)`` pairs, repeated SKUs merged, sorted by SKU."""
        return inventory.normalize_lines((item.sku, item.quantity) for item in self.items)


class PricedLine(BaseModel):
    """One priced line of ``validate_order``'s output."""

    sku: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


class PricedOrder(BaseModel):
    """``validate_order``'s output as later steps read it (``ctx.output_of``)."""

    lines: list[PricedLine]
    total_cents: int
    currency: str


class _Keys(BaseModel):
    """The keys later steps read from earlier outputs (each step returns some of them)."""

    payment_key: str = ""
    reservation_key: str = ""
    order_id: str = ""


def _build_output(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's output: what a client needs to show the customer, not every step's data."""
    return {
        "order_id": outputs["create_order"]["order_id"],
        "total_cents": outputs["validate_order"]["total_cents"],
        "currency": outputs["validate_order"]["currency"],
        "charge_id": outputs["charge_payment"]["charge_id"],
        "confirmation_message_id": outputs["send_confirmation"]["message_id"],
    }


saga = Saga(
    "order",
    input_model=OrderInput,
    description="Validate, reserve stock, charge payment, create the order, confirm by email",
    output=_build_output,
)


def _order(ctx: StepContext) -> OrderInput:
    """The run input as the model (the engine parses it; direct unit calls may pass JSON)."""
    if isinstance(ctx.input, OrderInput):
        return ctx.input
    return OrderInput.model_validate(ctx.input)


def _key(run_id: str, step: str) -> str:
    """The idempotency key the engine gives ``step`` of ``run_id`` (``run_id:step``)."""
    return f"{run_id}:{step}"


# -- steps ----------------------------------------------------------------------------


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def validate_order(ctx: StepContext) -> Result[dict[str, Any], str]:
    """Price the order against the catalogue; an unknown SKU rejects it without retry."""
    order = _order(ctx)
    lines = order.lines()
    catalogue = inventory.products(sku for sku, _ in lines)
    unknown = sorted(sku for sku, _ in lines if sku not in catalogue)
    if unknown:
        # A Failure with a plain value is a business rejection: the engine does not retry it.
        return Failure(f"unknown SKU(s): {', '.join(unknown)}")
    priced = [
        {
            "sku": sku,
            "quantity": quantity,
            "unit_price_cents": catalogue[sku].price_cents,
            "line_total_cents": catalogue[sku].price_cents * quantity,
        }
        for sku, quantity in lines
    ]
    total = sum(catalogue[sku].price_cents * quantity for sku, quantity in lines)
    orders.record_validation(ctx.idempotency_key, order.customer_id, total)
    return Success({"lines": priced, "total_cents": total, "currency": order.currency})


@validate_order.compensation(retry=_UNDO_RETRY)
def withdraw_validation(ctx: StepContext) -> None:
    """Mark the validation withdrawn so the audit trail shows the request was abandoned."""
    orders.withdraw_validation(ctx.idempotency_key)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def reserve_inventory(ctx: StepContext) -> dict[str, Any]:
    """Hold stock for every line, all or nothing; a shortage rejects the order."""
    priced = ctx.output_of("validate_order", PricedOrder)
    lines = [(line.sku, line.quantity) for line in priced.lines]
    reservation = inventory.reserve(ctx.idempotency_key, lines)
    return {
        "reservation_key": reservation.key,
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in reservation.lines],
    }


@reserve_inventory.compensation(retry=_UNDO_RETRY)
def release_inventory(ctx: StepContext) -> None:
    """Give the held stock back (also when the reserve attempt timed out: it may have held)."""
    inventory.release(ctx.idempotency_key)


@saga.step(retry=_PAYMENT_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def charge_payment(ctx: StepContext) -> dict[str, Any]:
    """Charge the order total; a decline rejects the order without retry."""
    order = _order(ctx)
    amount = ctx.output_of("validate_order", PricedOrder).total_cents
    charge = payments.charge(ctx.idempotency_key, order.customer_id, amount, order.payment_token)
    return {
        "payment_key": charge.key,
        "charge_id": charge.charge_id,
        "amount_cents": charge.amount_cents,
        "payment_token": charge.payment_token,
    }


@charge_payment.compensation(retry=_UNDO_RETRY)
def refund_payment(ctx: StepContext) -> None:
    """Refund the charge in full (also when the charge attempt failed: it may have gone through)."""
    payments.refund(ctx.idempotency_key)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def create_order(ctx: StepContext) -> dict[str, Any]:
    """Open the order, pointing at the reservation and the payment that back it."""
    order = _order(ctx)
    created = orders.create(
        ctx.idempotency_key,
        customer_id=order.customer_id,
        lines=order.lines(),
        total_cents=ctx.output_of("validate_order", PricedOrder).total_cents,
        currency=order.currency,
        payment_key=ctx.output_of("charge_payment", _Keys).payment_key,
        reservation_key=ctx.output_of("reserve_inventory", _Keys).reservation_key,
    )
    return {"order_id": created.order_id, "status": created.status}


@create_order.compensation(retry=_UNDO_RETRY)
def cancel_order(ctx: StepContext) -> None:
    """Cancel the order so the customer and the warehouse see it is off."""
    orders.cancel(ctx.idempotency_key)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def send_confirmation(ctx: StepContext) -> dict[str, Any]:
    """Email the customer that the order is placed."""
    order = _order(ctx)
    order_id = ctx.output_of("create_order", _Keys).order_id
    email = emails.send(
        ctx.idempotency_key, order.email, CONFIRMATION, subject=f"Order {order_id} confirmed"
    )
    return {"message_id": email.message_id}


@send_confirmation.compensation(retry=_UNDO_RETRY)
def send_cancellation(ctx: StepContext) -> None:
    """Tell the customer the order is off, if (and only if) they were told it was placed.

    Suppressing the confirmation first means a confirmation still in flight from a
    timed-out attempt can no longer go out after this point.
    """
    if emails.suppress(ctx.idempotency_key, CONFIRMATION):
        return
    emails.send(ctx.idempotency_key, _order(ctx).email, CANCELLATION, subject="Order cancelled")


# -- invariants -------------------------------------------------------------------------

_UNDONE = (RunStatus.COMPENSATED, RunStatus.CANCELLED)


def _expected_total(order: OrderInput) -> int:
    """The order total recomputed from the catalogue, independently of step outputs."""
    prices = {entry.sku: entry.price_cents for entry in CATALOGUE}
    return sum(prices.get(sku, 0) * quantity for sku, quantity in order.lines())


@saga.invariant
def run_ends_completed_or_compensated(snapshot: RunSnapshot) -> Iterator[str]:
    """A finished order run is COMPLETED, or COMPENSATED (CANCELLED when a user asked)."""
    run = snapshot.run
    if run.status is not RunStatus.COMPLETED and run.status not in _UNDONE:
        yield f"run {run.run_id} ended {run.status}, not COMPLETED or COMPENSATED: {run.error}"


@saga.invariant
def money_matches_outcome(snapshot: RunSnapshot) -> Iterator[str]:
    """COMPLETED: exactly one charge, not refunded, of the order total. Undone: net zero."""
    run = snapshot.run
    prefix = _key(run.run_id, "")
    taken = [c for c in payments.charges(prefix) if c.status != "voided"]
    if run.status is RunStatus.COMPLETED:
        expected_key = _key(run.run_id, "charge_payment")
        if [c.key for c in taken] != [expected_key]:
            yield f"run {run.run_id}: expected one charge under {expected_key}, found {taken}"
            return
        total = _expected_total(OrderInput.model_validate(run.input))
        (charge,) = taken
        if charge.status != "charged":
            yield f"run {run.run_id}: charge {charge.charge_id} is {charge.status}"
        if charge.amount_cents != total:
            yield f"run {run.run_id}: charged {charge.amount_cents} cents, order total is {total}"
    elif run.status in _UNDONE:
        for charge in taken:
            if charge.net_cents:
                yield (
                    f"run {run.run_id} is {run.status} but {charge.key} still holds "
                    f"{charge.net_cents} cents"
                )


@saga.invariant
def stock_matches_outcome(snapshot: RunSnapshot) -> Iterator[str]:
    """COMPLETED: the order's stock is held under the reserve key. Undone: nothing held."""
    run = snapshot.run
    held = [r for r in inventory.reservations(_key(run.run_id, "")) if r.is_active]
    if run.status is RunStatus.COMPLETED:
        expected_key = _key(run.run_id, "reserve_inventory")
        lines = OrderInput.model_validate(run.input).lines()
        if [(r.key, r.lines) for r in held] != [(expected_key, lines)]:
            yield f"run {run.run_id}: expected {lines} held under {expected_key}, found {held}"
    elif run.status in _UNDONE:
        for reservation in held:
            yield f"run {run.run_id} is {run.status} but {reservation.key} still holds stock"


@saga.invariant
def order_matches_outcome(snapshot: RunSnapshot) -> Iterator[str]:
    """COMPLETED: a standing order and a valid validation. Undone: neither stands."""
    run = snapshot.run
    standing = [o for o in orders.orders(_key(run.run_id, "")) if o.is_active]
    validation = orders.get_validation(_key(run.run_id, "validate_order"))
    if run.status is RunStatus.COMPLETED:
        expected_key = _key(run.run_id, "create_order")
        if [o.key for o in standing] != [expected_key]:
            yield f"run {run.run_id}: expected one order under {expected_key}, found {standing}"
        if validation is None or validation.status != "valid":
            yield f"run {run.run_id}: validation record is {validation}"
    elif run.status in _UNDONE:
        for order in standing:
            yield f"run {run.run_id} is {run.status} but order {order.order_id} still stands"
        if validation is not None and validation.status == "valid":
            yield f"run {run.run_id} is {run.status} but its validation was not withdrawn"


@saga.invariant
def emails_match_outcome(snapshot: RunSnapshot) -> Iterator[str]:
    """COMPLETED: a confirmation went out. Undone: a sent confirmation is then retracted."""
    yield from _email_violations(snapshot.run)


def _email_violations(run: RunRecord) -> Iterator[str]:
    key = _key(run.run_id, "send_confirmation")
    confirmation = emails.get(key, CONFIRMATION)
    cancellation = emails.get(key, CANCELLATION)
    was_confirmed = confirmation is not None and confirmation.is_sent
    if run.status is RunStatus.COMPLETED:
        if not was_confirmed:
            yield f"run {run.run_id} COMPLETED without a confirmation email"
        if cancellation is not None:
            yield f"run {run.run_id} COMPLETED but a cancellation email went out"
    elif run.status in _UNDONE and was_confirmed and cancellation is None:
        yield f"run {run.run_id} is {run.status}: the customer was confirmed and never told"


def ledger_violations(
    completed_run_ids: Collection[str], *, campaign_run_ids: Collection[str] | None = None
) -> list[str]:
    """Check the books across runs: stock is conserved and money matches completed orders.

    Stock: for every SKU, units on hand plus units held by active reservations equal the
    seeded stock. Money: charged minus refunded equals the sum of the orders of the
    COMPLETED runs, and no other run still holds money.

    Args:
        completed_run_ids: Every COMPLETED order run whose effects are in the demo
            database (reset the database before a campaign, or pass ``campaign_run_ids``).
        campaign_run_ids: When given, the money check only counts charges made by these
            runs (plus the completed ones), so earlier demo runs in the same database do
            not unbalance it. The stock check is always global.

    Returns:
        One line per violation; empty when the books balance.
    """
    violations: list[str] = []
    for level in inventory.stock_levels().values():
        if level.on_hand + level.reserved != level.initial:
            violations.append(
                f"stock of {level.sku}: {level.on_hand} on hand + {level.reserved} reserved "
                f"!= {level.initial} seeded"
            )
    completed = set(completed_run_ids)
    scope = None if campaign_run_ids is None else set(campaign_run_ids) | completed
    net = 0
    for charge in payments.charges():
        run_id = charge.key.rpartition(":")[0]
        if scope is not None and run_id not in scope:
            continue
        net += charge.net_cents
        if charge.net_cents and run_id not in completed:
            violations.append(
                f"charge {charge.key} holds {charge.net_cents} cents but its run is not COMPLETED"
            )
    expected = 0
    for run_id in sorted(completed):
        order = orders.get(_key(run_id, "create_order"))
        if order is None or not order.is_active:
            violations.append(f"COMPLETED run {run_id} has no standing order ({order})")
            continue
        expected += order.total_cents
    if net != expected:
        violations.append(
            f"net charged {net} cents != {expected} cents, the total of {len(completed)} "
            "COMPLETED orders"
        )
    return violations


# -- demo -------------------------------------------------------------------------------

GOOD_TOKEN = payments.GOOD_TOKEN


def demo_inputs(count: int, seed: int) -> list[dict[str, Any]]:
    """Order inputs for ``relay demo`` and chaos campaigns, the same for the same seed.

    Most are valid; about 15% use the declined token (they compensate after the charge
    fails) and about 10% name an unknown SKU (they compensate right after validation).
    From three inputs on, each kind appears at least once.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    rng = random.Random(seed)
    declined = min(count - 1, max(1, round(count * 0.15))) if count >= 2 else 0
    unknown = min(count - 1 - declined, max(1, round(count * 0.10))) if count >= 3 else 0
    kinds = ["declined"] * declined + ["unknown_sku"] * unknown
    kinds += ["valid"] * (count - len(kinds))
    rng.shuffle(kinds)
    skus = [entry.sku for entry in CATALOGUE]
    inputs: list[dict[str, Any]] = []
    for number, kind in enumerate(kinds, start=1):
        items = [
            {"sku": sku, "quantity": rng.randint(1, 3)}
            for sku in rng.sample(skus, rng.randint(1, 3))
        ]
        if kind == "unknown_sku":
            items.append({"sku": UNKNOWN_SKU, "quantity": 1})
        inputs.append(
            {
                "customer_id": f"cust-{seed}-{number:04d}",
                "email": f"customer{number}@example.com",
                "items": items,
                "payment_token": payments.DECLINED_TOKEN if kind == "declined" else GOOD_TOKEN,
                "currency": "USD",
            }
        )
    return inputs
