"""A saga of no-op steps for the benchmarks: what is measured is the engine, not user code."""

from __future__ import annotations

import os

from core.domain.context import StepContext
from core.domain.saga import Saga


def _noop(ctx: StepContext) -> None:
    return None


def build_saga(steps: int) -> Saga:
    """A saga named ``noop`` with ``steps`` sequential no-op steps."""
    saga = Saga("noop", description="benchmark: sequential no-op steps")
    for index in range(steps):
        saga.step(_noop, name=f"s{index}", timeout_seconds=30)
    return saga


saga = build_saga(int(os.environ.get("RELAY_BENCH_STEPS", "5")))
