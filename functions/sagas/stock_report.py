"""The example scheduled saga: every morning, count the stock and mail the low SKUs to ops.

It shows a schedule declared in code. ``relay dev`` fires it at each scheduled time (once
per time, however often its loop ticks); ``relay manifest`` lists it and Terraform makes
it a Cloud Scheduler job or an EventBridge Scheduler schedule that calls the same start,
idempotent per scheduled time. Start one now by hand the same way a schedule does::

    relay start stock_report --input '{"recipient": "ops@example.com"}'

Importing this module does no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.domain.context import StepContext
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from functions.demo_services import emails, inventory

REPORT = "stock_report"
SCHEDULE = "daily-stock-report"
STEP_TIMEOUT_SECONDS = 10.0
_SERVICE_RETRY = RetryPolicy(max_attempts=4, initial_delay_seconds=0.5, max_delay_seconds=10.0)


class StockReportInput(BaseModel):
    """Who gets the report and what counts as low."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipient: Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=254, pattern=emails.ADDRESS_PATTERN),
    ]
    low_stock_below: int = Field(default=25, ge=1, le=10**9)


saga = Saga(
    "stock_report",
    input_model=StockReportInput,
    description="Count stock on hand and email the SKUs running low (daily schedule)",
)
saga.schedule(
    SCHEDULE,
    "0 6 * * *",
    input={"recipient": "ops@example.com"},
    timezone="UTC",
    description="Every day at 06:00 UTC",
)


def _input(ctx: StepContext) -> StockReportInput:
    """The run input as the model (the engine parses it; direct unit calls may pass JSON)."""
    if isinstance(ctx.input, StockReportInput):
        return ctx.input
    return StockReportInput.model_validate(ctx.input)


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def count_stock(ctx: StepContext) -> dict[str, Any]:
    """Read every SKU's units on hand; list those below the threshold, lowest first."""
    threshold = _input(ctx).low_stock_below
    levels = inventory.stock_levels()
    low = sorted((level for level in levels.values() if level.on_hand < threshold),
                 key=lambda level: (level.on_hand, level.sku))  # fmt: skip
    return {
        "on_hand": {sku: level.on_hand for sku, level in sorted(levels.items())},
        "low": [{"sku": level.sku, "on_hand": level.on_hand} for level in low],
    }


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def send_report(ctx: StepContext) -> dict[str, Any]:
    """Mail the report once per run (the idempotency key makes a retried send the same)."""
    low = ctx.outputs["count_stock"]["low"]
    subject = f"{len(low)} SKU(s) low on stock" if low else "Stock is fine"
    email = emails.send(ctx.idempotency_key, _input(ctx).recipient, REPORT, subject=subject)
    return {"message_id": email.message_id, "low_skus": len(low)}
