"""Sagas the fuzz suite serves (RELAY_SAGA_MODULES): quick steps, so runs end within moments.

``fuzz-order`` has a strict input model (schemathesis generates its body from the model's
schema in ``/openapi.json``); ``fuzz-free`` takes any JSON and starts on ``fuzz.**`` events;
``fuzz-nightly`` has a schedule that fires once a year, so the cron loop stays quiet.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.domain.context import StepContext
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga

_ONCE = RetryPolicy(max_attempts=1)


class Item(BaseModel):
    """One line of an order."""

    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Z0-9-]+$")]
    quantity: int = Field(ge=1, le=1000)


class OrderInput(BaseModel):
    """The input of ``fuzz-order``."""

    model_config = ConfigDict(extra="forbid")

    customer: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    items: list[Item] = Field(min_length=1, max_length=5)
    note: Annotated[str, StringConstraints(max_length=200)] | None = None
    priority: Literal["low", "high"] = "low"


def reserve(ctx: StepContext[OrderInput]) -> dict[str, int]:
    """Count the items."""
    return {"lines": len(ctx.input.items)}


class Declined(Exception):
    """Raised by ``charge`` for the note "decline": the run compensates."""


def charge(ctx: StepContext[OrderInput]) -> dict[str, str]:
    """Pretend to charge; the note "decline" fails the step (the run compensates)."""
    if ctx.input.note == "decline":
        raise Declined(f"card of {ctx.input.customer} declined")
    return {"charged": ctx.input.customer[:8]}


def release(ctx: StepContext[OrderInput]) -> None:
    """Undo ``reserve`` (nothing to undo)."""


order = Saga("fuzz-order", input_model=OrderInput, description="fuzzed: a strict input model")
order.step(reserve, retry=_ONCE, timeout_seconds=5).compensation(release)
order.step(charge, retry=_ONCE, timeout_seconds=5)


def echo(ctx: StepContext) -> object:
    """Echo the input."""
    return {"input": ctx.input}


free = Saga("fuzz-free", description="fuzzed: any JSON input, started by fuzz.** events")
free.step(echo, retry=_ONCE, timeout_seconds=5)
free.on_event("fuzz.**")

nightly = Saga("fuzz-nightly", description="fuzzed: a schedule (fires on 1 January only)")
nightly.step(echo, retry=_ONCE, timeout_seconds=5)
nightly.schedule("fuzz-nightly", "0 3 1 1 *")

SAGA_MODULES = ",".join(
    f"{saga.name}=tests.fuzz.fuzz_sagas:{attribute}"
    for attribute, saga in (("order", order), ("free", free), ("nightly", nightly))
)
"""The RELAY_SAGA_MODULES value serving these three sagas."""
SAGA_NAMES = "fuzz-order,fuzz-free,fuzz-nightly"
"""The RELAY_SAGAS value: these three only (the bundle's demo sagas retry for minutes)."""
