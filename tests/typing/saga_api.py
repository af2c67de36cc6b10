"""Type-checked only (``make typecheck``): the saga API as users write it, under mypy --strict.

Every ``assert_type`` names the precise type, so a regression to ``Any`` fails (mypy
reports ``Expression is of type "Any"``). Every ``# type: ignore[...]`` marks a mistake the
API must refuse: with ``warn_unused_ignores`` (part of strict), mypy fails when the
mistake starts to type-check, for example because a type degraded to ``Any``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import assert_type

from pydantic import BaseModel

from core import (
    Failure,
    JSONValue,
    NonRetryableStepError,
    Result,
    RetryPolicy,
    Saga,
    StepContext,
    Success,
)
from core.domain.steps import StepHandle


class Order(BaseModel):
    """Input of the example saga."""

    customer: str
    cents: int


class Refund(BaseModel):
    """Input of another saga: steps written for it do not fit ``order``."""

    refund_id: str


class Charge(BaseModel):
    """How later steps read the output of ``charge``."""

    charge_id: str


order = Saga("typed-order", input_model=Order, description="typing check")
assert_type(order, Saga[Order])

untyped = Saga("untyped")
assert_type(untyped, Saga[JSONValue])


@order.step(retry=RetryPolicy(max_attempts=5), timeout_seconds=10)
def charge(ctx: StepContext[Order]) -> dict[str, str]:
    """A decorated step sees its saga's input model."""
    assert_type(ctx.input, Order)
    assert_type(ctx.input.customer, str)
    assert_type(ctx.input.cents, int)
    _ = ctx.input.no_such_field  # type: ignore[attr-defined]  # the model has no such field
    if ctx.input.cents <= 0:
        raise NonRetryableStepError("nothing to charge")
    return {"charge_id": ctx.idempotency_key}


assert_type(charge, StepHandle[Order, dict[str, str]])
assert_type(charge.name, str)


@charge.compensation
def refund(ctx: StepContext[Order]) -> None:
    """A bare compensation decorator returns the function unchanged."""
    assert_type(ctx.output, JSONValue)


assert_type(refund, Callable[[StepContext[Order]], None])


@order.step
def ship(ctx: StepContext[Order]) -> Result[str, str]:
    """Steps may return a Result; earlier outputs are JSON, or a model through output_of."""
    assert_type(ctx.outputs, Mapping[str, JSONValue])
    assert_type(ctx.outputs["charge"], JSONValue)
    charged = ctx.output_of("charge", Charge)
    assert_type(charged, Charge)
    assert_type(ctx.output_of("charge", dict[str, str]), dict[str, str])
    return Success(charged.charge_id) if charged.charge_id else Failure("not charged")


assert_type(ship, StepHandle[Order, Result[str, str]])


@ship.compensation(retry=RetryPolicy(max_attempts=3), timeout_seconds=5)
def unship(ctx: StepContext[Order]) -> None:
    """A compensation decorator with arguments."""


@order.step  # type: ignore[arg-type]  # a step written for another saga's input is refused
def wrong_input(ctx: StepContext[Refund]) -> None:
    """Refused: ``order`` passes an ``Order``, not a ``Refund``."""


@charge.compensation  # type: ignore[arg-type]  # so is such a compensation
def wrong_undo(ctx: StepContext[Refund]) -> None:
    """Refused: the compensation gets the step's context."""


@untyped.step
def echo(ctx: StepContext[JSONValue]) -> JSONValue:
    """A saga without an input model passes JSON, which step code must narrow."""
    assert_type(ctx.input, JSONValue)
    return ctx.input if isinstance(ctx.input, dict) else None


@untyped.step  # type: ignore[arg-type]  # a model-typed step does not fit a JSON saga
def wants_a_model(ctx: StepContext[Order]) -> None:
    """Refused: ``untyped`` has no input model."""


audit = order.step(lambda ctx: ctx.input.customer, name="audit", parallel=True)
assert_type(audit, StepHandle[Order, str])

order.on_event("orders.*.created")
order.schedule("nightly-report", "0 3 * * *", input={"customer": "ops", "cents": 1})


def call_a_step_directly(ctx: StepContext[Order]) -> None:
    """Calling a handle calls the step function with its own types (unit tests of steps)."""
    assert_type(charge(ctx), dict[str, str])
    charge(StepContext[Refund])  # type: ignore[arg-type]  # not a context at all
