"""Run and step statuses, and which record transitions each status allows.

The status strings are part of the public contract. The transitions are the methods of
``core.domain.records.RunRecord`` / ``StepRecord``; calling one from a status not listed
for it raises ``IllegalTransitionError``. Step transitions (``attempt`` counts every
claim, execute and compensate, and never goes down)::

    claimed                       PENDING, RUNNING (lease lost)    -> RUNNING     attempt+1
    parked                        PENDING                          -> RUNNING     attempt+1
    event_taken                   PENDING                          -> SUCCEEDED   attempt+1
    succeeded                     RUNNING                          -> SUCCEEDED
    retry_scheduled               RUNNING                          -> PENDING
    failed                        PENDING, RUNNING                 -> FAILED
    skipped                       PENDING                          -> SKIPPED
    stopped_waiting               RUNNING (parked)                 -> SKIPPED
    event_buffered                PENDING                          -> PENDING
    compensation_claimed          SUCCEEDED, FAILED, RUNNING,      -> COMPENSATING attempt+1
                                  COMPENSATING
    compensated                   COMPENSATING                     -> COMPENSATED
    compensation_retry_scheduled  COMPENSATING                     -> COMPENSATING
    compensation_failed           COMPENSATING                     -> COMPENSATING
    budget_reset                  PENDING, FAILED, COMPENSATING    -> (unchanged)

Run transitions::

    running, waiting              PENDING, RUNNING, WAITING        -> RUNNING / WAITING
    completed                     PENDING, RUNNING, WAITING        -> COMPLETED
    compensating                  PENDING, RUNNING, WAITING        -> COMPENSATING
    closed_without_compensation   PENDING, RUNNING, WAITING        -> COMPENSATED / CANCELLED
    compensation_finished         COMPENSATING                     -> COMPENSATED / CANCELLED
    cancel_requested              COMPENSATING                     -> COMPENSATING
    failed                        any but a terminal status        -> FAILED
    retried                       FAILED                           -> RUNNING / COMPENSATING
    redriven                      PENDING, RUNNING, WAITING,       -> (unchanged: the sweeper's
                                  COMPENSATING                        bookkeeping only)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


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


_ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING})

RUN_TRANSITIONS: Final[Mapping[str, frozenset[RunStatus]]] = {
    "running": _ACTIVE_RUN,
    "waiting": _ACTIVE_RUN,
    "completed": _ACTIVE_RUN,
    "compensating": _ACTIVE_RUN,
    "closed_without_compensation": _ACTIVE_RUN,
    "compensation_finished": frozenset({RunStatus.COMPENSATING}),
    "cancel_requested": frozenset({RunStatus.COMPENSATING}),
    "failed": frozenset(RunStatus) - _TERMINAL_RUN,
    "retried": frozenset({RunStatus.FAILED}),
    "redriven": frozenset(RunStatus) - _TERMINAL_RUN - {RunStatus.FAILED},
}
"""The run statuses each ``RunRecord`` transition may be called from."""

_CLAIMABLE = frozenset({StepStatus.PENDING, StepStatus.RUNNING})
_PENDING = frozenset({StepStatus.PENDING})
_RUNNING = frozenset({StepStatus.RUNNING})
_COMPENSATING = frozenset({StepStatus.COMPENSATING})

STEP_TRANSITIONS: Final[Mapping[str, frozenset[StepStatus]]] = {
    "claimed": _CLAIMABLE,
    "parked": _PENDING,
    "event_taken": _PENDING,
    "succeeded": _RUNNING,
    "retry_scheduled": _RUNNING,
    "failed": _CLAIMABLE,
    "skipped": _PENDING,
    "stopped_waiting": _RUNNING,
    "event_buffered": _PENDING,
    "compensation_claimed": frozenset(
        {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.RUNNING, StepStatus.COMPENSATING}
    ),
    "compensated": _COMPENSATING,
    "compensation_retry_scheduled": _COMPENSATING,
    "compensation_failed": _COMPENSATING,
    "budget_reset": frozenset({StepStatus.PENDING, StepStatus.FAILED, StepStatus.COMPENSATING}),
}
"""The step statuses each ``StepRecord`` transition may be called from."""
