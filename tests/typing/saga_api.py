"""Type-checked only (``make typecheck``): the saga API as users write it, under mypy --strict."""

from __future__ import annotations

from pydantic import BaseModel

from core import Failure, NonRetryableStepError, Result, RetryPolicy, Saga, StepContext, Success


class Order(BaseModel):
    """Input of the example saga."""

    customer: str
    cents: int


order = Saga("typed-order", input_model=Order, description="typing check")


@order.step(retry=RetryPolicy(max_attempts=5), timeout_seconds=10)
def charge(ctx: StepContext) -> dict[str, str]:
    """A decorated step keeps a precise signature for callers."""
    if ctx.input.cents <= 0:
        raise NonRetryableStepError("nothing to charge")
    return {"charge_id": ctx.idempotency_key}


@charge.compensation
def refund(ctx: StepContext) -> None:
    """A bare compensation decorator."""


@order.step
def ship(ctx: StepContext) -> Result[str, str]:
    """Steps may return a Result."""
    charged = ctx.outputs["charge"]
    return Success(str(charged)) if charged else Failure("not charged")


@ship.compensation(retry=RetryPolicy(max_attempts=3), timeout_seconds=5)
def unship(ctx: StepContext) -> None:
    """A compensation decorator with arguments."""


parallel_handle = order.step(lambda ctx: None, name="audit", parallel=True)
order.on_event("orders.*.created")
order.schedule("nightly-report", "0 3 * * *", input={"customer": "ops", "cents": 1})
name: str = parallel_handle.name
