"""The example ETL pipeline: generated sales → cleaned, converted to EUR → totals by region.

Its tasks are plain functions whose parameters say where their inputs come from: a
parameter named after a task receives that task's output; the others (``row_count``,
``seed``, ``batch_size``, ``eur_per_unit``) come from the pipeline's input, with the defaults shown.
See the plan, its parallel levels and its Mermaid diagram with::

    relay plan etl            # a table and a diagram
    relay plan etl --json     # order, levels, edges, schemas

``extract`` streams its rows in batches (``stream_output=True``): each batch is stored
through the I/O manager as it is produced, and ``audit`` and ``transform`` receive the
batches in order. ``audit`` runs beside ``transform`` and is ``fail_safe``: ``load`` waits for it (a
control edge, ``dependencies=``) but the pipeline goes on when it fails. The data set is
generated from a seed, so every run of the same input sees the same rows. Importing this
module does no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict

from core.tasks import Pipeline, TaskRegistry, task

CURRENCIES = ("EUR", "USD", "GBP")
REGIONS = ("north", "south", "east", "west")
DEFAULT_EUR_PER_UNIT = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}


class Sale(BaseModel):
    """One raw sales row as the source system exports it."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    region: str
    amount_cents: int
    currency: str


class CleanSale(BaseModel):
    """A valid sale, its amount converted to euros."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    region: str
    amount_eur: float


class RegionTotals(BaseModel):
    """What the pipeline loads: euro totals by region, and how many rows were kept."""

    totals_eur: dict[str, float]
    orders: int
    rejected: int


@task(tags=["etl.extract"], timeout=60, stream_output=True)
def extract(
    row_count: int = 200, seed: int = 7, batch_size: int = 50, resume_from: int = 0
) -> Iterator[list[Sale]]:
    """Stream the day's sales rows in batches (a few rows invalid: negative or unknown currency).

    Each batch is one chunk, stored as it is produced. Batch ``b`` depends only on
    ``seed`` and ``b`` (its own random generator), which is the resume contract: a
    worker that dies mid-stream is resumed with ``resume_from`` = the next batch.
    """
    size = max(batch_size, 1)
    for batch in range(resume_from, (row_count + size - 1) // size):
        rng = random.Random(f"{seed}:{batch}")
        rows = []
        for index in range(batch * size, min(row_count, (batch + 1) * size)):
            bad_currency, bad_amount = index % 17 == 0, index % 13 == 0
            currency = rng.choice((*CURRENCIES, "XXX")) if bad_currency else rng.choice(CURRENCIES)
            amount = rng.randint(-500, 50_000) if bad_amount else rng.randint(100, 50_000)
            rows.append(
                Sale(
                    order_id=f"o-{seed}-{index:05d}",
                    region=rng.choice(REGIONS),
                    amount_cents=amount,
                    currency=currency,
                )
            )
        yield rows


@task(tags=["etl.check"], fail_safe=True, max_retries=0)
def audit(extract: list[list[Sale]]) -> list[str]:
    """List the rows transform will reject (a report; the pipeline does not depend on it)."""
    return [
        f"{sale.order_id}: {sale.amount_cents} {sale.currency}"
        for batch in extract
        for sale in batch
        if sale.amount_cents <= 0 or sale.currency not in CURRENCIES
    ]


@task(tags=["etl.transform"], max_retries=3)
def transform(
    extract: list[list[Sale]], eur_per_unit: dict[str, float] | None = None
) -> list[CleanSale]:
    """Drop invalid rows of every batch and convert the rest to euros."""
    rates = eur_per_unit or DEFAULT_EUR_PER_UNIT
    return [
        CleanSale(
            order_id=sale.order_id,
            region=sale.region,
            amount_eur=round(sale.amount_cents / 100 * rates[sale.currency], 2),
        )
        for batch in extract
        for sale in batch
        if sale.amount_cents > 0 and sale.currency in rates
    ]


@task(tags=["etl.load"], dependencies=["audit"])
def load(transform: list[CleanSale], row_count: int = 200) -> RegionTotals:
    """Aggregate the clean sales by region."""
    totals: dict[str, float] = {}
    for sale in transform:
        totals[sale.region] = round(totals.get(sale.region, 0.0) + sale.amount_eur, 2)
    return RegionTotals(
        totals_eur=dict(sorted(totals.items())),
        orders=len(transform),
        rejected=row_count - len(transform),
    )


registry = TaskRegistry([extract, audit, transform, load])
pipeline = Pipeline(
    "etl",
    tags=["etl.**"],
    registry=registry,
    description="generated sales → cleaned, in EUR → totals by region",
)
