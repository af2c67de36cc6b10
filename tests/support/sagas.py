"""Sagas built for engine tests: call counters, a three-step saga that fails on demand, and
sagas that sleep or wait for an event."""

from __future__ import annotations

from collections import Counter
from typing import Any

from core import RetryPolicy, Saga, StepContext

FAST = RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0)
HOUR = 3600.0


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


def sleeper() -> Saga:
    """before -> nap (a one-hour durable sleep) -> after, which reads when nap woke."""
    saga = Saga("sleeper")
    saga.step(lambda ctx: {"before": True}, name="before")
    saga.sleep("nap", seconds=HOUR)
    saga.step(lambda ctx: {"after": ctx.outputs["nap"]["woke_at"]}, name="after")
    return saga


def payment_saga(compensated: list[str]) -> Saga:
    """reserve (compensable) -> paid (waits two hours for payments.*) -> ship."""
    saga = Saga("checkout")

    @saga.step
    def reserve(ctx: StepContext) -> dict[str, str]:
        return {"reservation": ctx.idempotency_key}

    @reserve.compensation
    def release(ctx: StepContext) -> None:
        compensated.append(ctx.run_id)

    saga.wait_for_event(
        "paid",
        topic="payments.*",
        correlation=lambda event: event["data"].get("order_id"),
        timeout_seconds=2 * HOUR,
    )

    @saga.step
    def ship(ctx: StepContext) -> dict[str, Any]:
        return {"amount": ctx.outputs["paid"]["amount"]}

    return saga
