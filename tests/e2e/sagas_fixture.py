"""A small saga for end-to-end tests of ``relay dev``, loaded via RELAY_SAGA_MODULES."""

from __future__ import annotations

from core.domain.context import StepContext
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga

# Short timeouts keep a lease lost to a crashed worker short; five attempts make a run
# that meets several injected crashes still complete.
_RETRY = RetryPolicy(max_attempts=5, initial_delay_seconds=0.05, max_delay_seconds=0.5)


def first(ctx: StepContext) -> dict[str, object]:
    """Echo the input."""
    return {"input": ctx.input, "attempt": ctx.attempt}


def second(ctx: StepContext) -> dict[str, object]:
    """Read the previous step's output."""
    return {"previous": ctx.outputs["first"]["attempt"]}


def third(ctx: StepContext) -> str:
    """Finish."""
    return "done"


saga = Saga("e2e", description="three quick steps, each echoing the run input")
for _fn in (first, second, third):
    saga.step(_fn, retry=_RETRY, timeout_seconds=1)
