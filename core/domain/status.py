"""Run and step statuses; the exact strings are part of the public contract."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its life; terminal statuses never change except by `retry`."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True when no further step will run without a manual `retry`."""
        return self in _TERMINAL_RUN


class StepStatus(StrEnum):
    """Where one step of a run is; SUCCEEDED stays so unless compensation starts."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    SKIPPED = "SKIPPED"


class Action(StrEnum):
    """What a queue message asks the worker to do with a step."""

    EXECUTE = "execute"
    COMPENSATE = "compensate"
    RESUME = "resume"
    TIMEOUT = "timeout"


_TERMINAL_RUN = frozenset(
    {RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED, RunStatus.CANCELLED}
)
