"""The clock port, so lease and backoff logic can be tested with a fixed time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in epoch seconds."""

    def now(self) -> float:
        """The current time in seconds since the epoch."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """The current time in seconds since the epoch."""
        return time.time()


class FixedClock:
    """A clock that moves only when told to; for deterministic tests."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """The clock's current reading."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._now += seconds
