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


class LowStock(BaseModel):
    """One SKU below the threshold."""

    sku: str
    on_hand: int


class StockCount(BaseModel):
    """What ``count_stock`` found: units on hand per SKU, and the SKUs running low."""

    on_hand: dict[str, int]
    low: list[LowStock]


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


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def count_stock(ctx: StepContext[StockReportInput]) -> StockCount:
    """Read every SKU's units on hand; list those below the threshold, lowest first."""
    threshold = ctx.input.low_stock_below
    levels = inventory.stock_levels()
    low = sorted((level for level in levels.values() if level.on_hand < threshold),
                 key=lambda level: (level.on_hand, level.sku))  # fmt: skip
    return StockCount(
        on_hand={sku: level.on_hand for sku, level in sorted(levels.items())},
        low=[LowStock(sku=level.sku, on_hand=level.on_hand) for level in low],
    )


@saga.step(retry=_SERVICE_RETRY, timeout_seconds=STEP_TIMEOUT_SECONDS)
def send_report(ctx: StepContext[StockReportInput]) -> dict[str, Any]:
    """Mail the report once per run (the idempotency key makes a retried send the same)."""
    low = ctx.output_of("count_stock", StockCount).low
    subject = f"{len(low)} SKU(s) low on stock" if low else "Stock is fine"
    email = emails.send(ctx.idempotency_key, ctx.input.recipient, REPORT, subject=subject)
    return {"message_id": email.message_id, "low_skus": len(low)}
