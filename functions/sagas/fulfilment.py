r"""The example fulfilment saga: tell the customer, wait for the courier, then ask for a review.

It shows the two steps that run no code. ``courier_pickup`` parks the run (WAITING, no
worker held) until a ``couriers.<carrier>.picked_up`` event names its order; the run was
started with the order id as its idempotency key, so the event's ``order_id`` finds it
without any index. ``delivery_window`` is a durable sleep. Try it on ``relay dev``::

    relay start fulfilment --input '{"order_id": "o-42", "email": "ada@example.com"}' \
        --idempotency-key o-42                       # WAITING at courier_pickup
    relay publish couriers.dhl.picked_up --data '{"order_id": "o-42"}'   # resumed
    relay runs show <run id>                         # COMPLETED after the delivery window

No pickup within ``PICKUP_TIMEOUT_SECONDS`` fails the wait and the run compensates: the
customer who was told the parcel is on its way is told it is delayed. Importing this
module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from core.domain.context import StepContext
from core.domain.records import RunSnapshot
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from core.domain.status import RunStatus
from functions.demo_services import emails

DISPATCH = "dispatch_notice"
DELAY = "dispatch_delay"
REVIEW = "review_request"
PICKUP_TOPIC = "couriers.*.picked_up"
PICKUP_TIMEOUT_SECONDS = 2 * 86400.0
DELIVERY_WINDOW_SECONDS = 3.0
"""How long after pickup the review request goes out: three seconds here so the demo
finishes while you watch; a shop would wait days (a sleep may last up to 30 days)."""
STEP_TIMEOUT_SECONDS = 10.0

_SERVICE_RETRY = RetryPolicy(max_attempts=4, initial_delay_seconds=0.5, max_delay_seconds=10.0)
_UNDO_RETRY = RetryPolicy(max_attempts=20, initial_delay_seconds=0.5, max_delay_seconds=30.0)


class FulfilmentInput(BaseModel):
    """What starts a fulfilment: the order to ship and who to tell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=254, pattern=emails.ADDRESS_PATTERN),
    ]


class Pickup(BaseModel):
    """The data of a pickup event, as the ``courier_pickup`` step's output."""

    model_config = ConfigDict(extra="allow", frozen=True)

    order_id: str
    carrier: str = "the courier"


def pickup_order_id(event: Mapping[str, Any]) -> str | None:
    """The correlation of a pickup event: its ``data.order_id`` (the run's idempotency key)."""
    data = event.get("data")
    order_id = data.get("order_id") if isinstance(data, Mapping) else None
    return order_id if isinstance(order_id, str) and order_id else None


saga = Saga(
    "fulfilment",
    input_model=FulfilmentInput,
    description="Announce dispatch, wait for the courier's pickup event, then request a review",
)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def announce_dispatch(ctx: StepContext[FulfilmentInput]) -> dict[str, Any]:
    """Tell the customer the parcel is packed and waiting for the courier."""
    request = ctx.input
    email = emails.send(
        ctx.idempotency_key, request.email, DISPATCH, subject=f"Order {request.order_id} is packed"
    )
    return {"message_id": email.message_id}


@announce_dispatch.compensation(retry=_UNDO_RETRY)
def announce_delay(ctx: StepContext[FulfilmentInput]) -> None:
    """The courier never came: retract an unsent notice, or tell the customer it is delayed."""
    if emails.suppress(ctx.idempotency_key, DISPATCH):
        return
    request = ctx.input
    emails.send(
        ctx.idempotency_key, request.email, DELAY, subject=f"Order {request.order_id} is delayed"
    )


saga.wait_for_event(
    "courier_pickup",
    topic=PICKUP_TOPIC,
    correlation=pickup_order_id,
    timeout_seconds=PICKUP_TIMEOUT_SECONDS,
)
saga.sleep("delivery_window", seconds=DELIVERY_WINDOW_SECONDS)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def request_review(ctx: StepContext[FulfilmentInput]) -> dict[str, Any]:
    """Ask the customer how the delivery went, naming the carrier that picked it up."""
    request = ctx.input
    carrier = ctx.output_of("courier_pickup", Pickup).carrier
    email = emails.send(
        ctx.idempotency_key,
        request.email,
        REVIEW,
        subject=f"How was your delivery with {carrier}?",
    )
    return {"message_id": email.message_id}


@saga.invariant
def customer_hears_the_outcome(snapshot: RunSnapshot) -> Iterator[str]:
    """COMPLETED: notice and review request sent. Undone: a sent notice was followed up."""
    run = snapshot.run
    dispatch = emails.get(f"{run.run_id}:announce_dispatch", DISPATCH)
    was_announced = dispatch is not None and dispatch.is_sent
    if run.status is RunStatus.COMPLETED:
        if not was_announced:
            yield f"run {run.run_id} COMPLETED without a dispatch notice"
        if emails.get(f"{run.run_id}:request_review", REVIEW) is None:
            yield f"run {run.run_id} COMPLETED without a review request"
    elif run.status in (RunStatus.COMPENSATED, RunStatus.CANCELLED):
        if was_announced and emails.get(f"{run.run_id}:announce_dispatch", DELAY) is None:
            yield f"run {run.run_id} is {run.status}: the customer was never told of the delay"
    else:
        yield f"run {run.run_id} ended {run.status}, not COMPLETED or COMPENSATED: {run.error}"
