"""Sagas built for engine tests: call counters and a three-step saga that fails on demand."""

from __future__ import annotations

from collections import Counter
from typing import Any

from core import RetryPolicy, Saga, StepContext

FAST = RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0)


class Calls(Counter[str]):
    """Counts calls per function name, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def hit(self, name: str) -> None:
        self[name] += 1
        self.order.append(name)


def linear_saga(
    calls: Calls,
    *,
    fail_at: str | None = None,
    failures: int = 10**9,
    retry: RetryPolicy = FAST,
    name: str = "linear",
) -> Saga:
    """a -> b -> c, each compensable; ``fail_at`` raises ``failures`` times."""
    saga = Saga(name)
    remaining = {"left": failures}

    def make(step: str) -> None:
        def action(ctx: StepContext) -> dict[str, Any]:
            calls.hit(step)
            if step == fail_at and remaining["left"] > 0:
                remaining["left"] -= 1
                raise RuntimeError(f"{step} broke")
            return {"step": step, "attempt": ctx.attempt, "key": ctx.idempotency_key}

        def undo(ctx: StepContext) -> None:
            calls.hit(f"undo_{step}")

        handle = saga.step(action, name=step, retry=retry, timeout_seconds=5)
        handle.compensation(undo)

    for step in ("a", "b", "c"):
        make(step)
    return saga
