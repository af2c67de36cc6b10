"""Stall reports that cannot hang: every diagnostic call runs under a deadline and a budget.

A chaos campaign that misses its deadline explains itself (which runs are stuck where,
what the queues hold) before it fails. On a machine that is already overloaded, the very
calls that explain the stall are the ones most likely to hang (issue 9: the AWS stall
report sat in a DynamoDB query until pytest's timeout). ``within`` gives one call a hard
wall-clock bound whatever the client's own timeouts and retries are: the call runs in a
daemon thread that is abandoned if it does not answer in time. ``Budget`` bounds a
whole report, and records what it had to skip instead of raising.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from core.domain.records import RunId, RunRecord, RunSnapshot

T = TypeVar("T")


class DiagnosticTimeout(Exception):
    """Raised when a diagnostic call gave no answer within its bound."""


def within(seconds: float, call: Callable[[], T], *, what: str = "call") -> T:
    """``call()``'s result, or ``DiagnosticTimeout`` after ``seconds``.

    An exception raised by ``call`` is raised here. A call that overruns keeps running in
    its daemon thread until its own client gives up; nothing waits for it.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"diagnostic: {what}", daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    if thread.is_alive():
        raise DiagnosticTimeout(f"{what}: no answer within {seconds:.0f}s")
    if failure:
        raise failure[0]
    return outcome[0]


@dataclass
class Budget:
    """A stall report's time: each call gets at most ``per_call_seconds``, all of them
    together at most ``total_seconds``; what could not be read is noted, not raised."""

    total_seconds: float
    per_call_seconds: float
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.total_seconds

    @property
    def is_spent(self) -> bool:
        """True once the report's time is up."""
        return time.monotonic() >= self._deadline

    def call(self, what: str, call: Callable[[], T]) -> T | None:
        """``call()``'s result, or None (with a note) if it failed, overran or no time is left."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.notes.append(f"{what}: skipped, the report's {self.total_seconds:.0f}s are spent")
            return None
        try:
            return within(min(self.per_call_seconds, left), call, what=what)
        except DiagnosticTimeout as exc:
            self.notes.append(str(exc))
        except Exception as exc:
            self.notes.append(f"{what}: {type(exc).__name__}: {exc}")
        return None


def unfinished_runs(
    budget: Budget,
    *,
    list_unfinished: Callable[[], Sequence[RunRecord]],
    load: Callable[[RunId], RunSnapshot | None],
    limit: int = 30,
) -> list[str]:
    """One line per unfinished run (up to ``limit``): where each step stands, bounded.

    ``name=STATUS#attempt`` per step, with the lease or retry time from now, and how often
    the sweeper re-drove the run: what a stall needs to be understood.
    """
    unfinished = budget.call("list unfinished runs", list_unfinished)
    lines = [f"unfinished runs: {'?' if unfinished is None else len(unfinished)}"]
    now = time.time()
    for header in list(unfinished or [])[:limit]:
        snapshot = budget.call(f"load {header.run_id}", functools.partial(load, header.run_id))
        if snapshot is None:
            continue
        steps = ", ".join(
            f"{r.name}={r.status.value}#{r.attempt}"
            + (f" lease{r.lease_until - now:+.0f}s" if r.lease_until else "")
            + (f" retry{r.retry_at - now:+.0f}s" if r.retry_at else "")
            for r in snapshot.steps.values()
        )
        swept = f" (re-driven {snapshot.run.redrive_count}x)" if snapshot.run.redrive_count else ""
        lines.append(f"{header.run_id} {snapshot.run.status.value}{swept}: {steps}")
    return lines
