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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

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
