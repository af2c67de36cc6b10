"""A saga that sleeps and then waits for a payment event (the local end-to-end waits test)."""

from __future__ import annotations

from typing import Any

from core import Saga, StepContext

saga = Saga("parcel", description="hold a parcel briefly, then ship it once it is paid")


@saga.step
def pack(ctx: StepContext) -> dict[str, Any]:
    """Pack the parcel."""
    return {"packed": ctx.input["parcel"]}


saga.sleep("cool_off", seconds=1.5)
saga.wait_for_event(
    "paid",
    topic="payments.*.confirmed",
    correlation=lambda event: event["data"].get("parcel"),
    timeout_seconds=120,
)


@saga.step
def ship(ctx: StepContext) -> dict[str, Any]:
    """Ship what was paid for."""
    return {"shipped": ctx.outputs["pack"]["packed"], "paid": ctx.outputs["paid"]["amount"]}
