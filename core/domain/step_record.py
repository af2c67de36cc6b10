"""The record of one step of one run, and its transitions (re-exported by ``records``).

Like ``RunRecord``, every change is a named transition returning a new record one version
higher; a transition from a status ``STEP_TRANSITIONS`` does not allow raises
``IllegalTransitionError`` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core.domain.messages import RunId, StepName
from core.domain.status import STEP_TRANSITIONS, StepStatus
from core.errors import IllegalTransitionError

JSON = Any
"""A JSON value (dict, list, str, int, float, bool or None) as produced by ``json.loads``."""


def _require(record: StepRecord, transition: str) -> None:
    """Raise ``IllegalTransitionError`` unless the step's status allows ``transition``."""
    allowed = STEP_TRANSITIONS[transition]
    if record.status in allowed:
        return
    raise IllegalTransitionError(
        record=f"step {record.name!r} of run {record.run_id}",
        transition=transition,
        status=record.status.value,
        allowed=sorted(s.value for s in allowed),
    )


@dataclass(frozen=True, slots=True)
class StepRecord:
    """The state of one step of one run.

    ``attempt`` counts every claim of the step (execute and compensate) and never goes
    down, so message ids derived from it are unique per logical delivery;
    ``compensation_attempts`` is the part of it that were claims of the compensation, so
    ``execute_attempts`` are the step's own. ``budget_start`` is the attempt number the
    current retry budget counts from: it moves when compensation starts and when a run is
    retried by hand. ``output`` holds the JSON output inline, or ``{"$ref": ...}`` when
    the I/O manager holds it.
    """

    run_id: RunId
    name: StepName
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    budget_start: int = 0
    compensation_attempts: int = 0
    lease_until: float | None = None
    retry_at: float | None = None
    output: JSON = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    version: int = 1
    error_detail: str | None = None
    """The full text behind ``error``, secrets redacted; None when there is nothing more."""

    @property
    def execute_attempts(self) -> int:
        """Attempts of the step itself (sleeps and event waits included), never its undo."""
        return self.attempt - self.compensation_attempts

    @property
    def attempts_in_budget(self) -> int:
        """Attempts used since the current retry budget started."""
        return self.attempt - self.budget_start

    @property
    def compensation_attempts_in_budget(self) -> int:
        """Compensation attempts the next compensation claim counts against its budget."""
        return self.attempts_in_budget if self.status is StepStatus.COMPENSATING else 0

    def has_live_lease(self, now: float) -> bool:
        """True while a worker holds this step and its lease has not run out."""
        return self.lease_until is not None and self.lease_until > now

    # -- execute ------------------------------------------------------------------

    def claimed(
        self,
        *,
        now: float,
        lease_until: float,
        error: str | None,
        error_detail: str | None = None,
    ) -> StepRecord:
        """A worker takes the step for one attempt, holding it until ``lease_until``.

        ``error`` is what the step's last attempt left (shown while the retry runs).
        """
        _require(self, "claimed")
        return replace(
            self,
            status=StepStatus.RUNNING,
            attempt=self.attempt + 1,
            lease_until=lease_until,
            started_at=self.started_at or now,
            retry_at=None,
            error=error,
            error_detail=error_detail,
            updated_at=now,
            version=self.version + 1,
        )

    def parked(self, *, now: float, until: float) -> StepRecord:
        """A sleep or event wait begins: RUNNING with no worker until its deadline."""
        _require(self, "parked")
        return replace(
            self,
            status=StepStatus.RUNNING,
            attempt=self.attempt + 1,
            lease_until=until,
            started_at=now,
            retry_at=None,
            error=None,
            error_detail=None,
            updated_at=now,
            version=self.version + 1,
        )

    def event_taken(self, *, now: float, output: JSON) -> StepRecord:
        """An event wait reached with its event already buffered ends at once."""
        _require(self, "event_taken")
        return replace(
            self,
            status=StepStatus.SUCCEEDED,
            attempt=self.attempt + 1,
            output=output,
            error=None,
            error_detail=None,
            lease_until=None,
            retry_at=None,
            started_at=now,
            finished_at=now,
            updated_at=now,
            version=self.version + 1,
        )

    def succeeded(self, *, now: float, output: JSON) -> StepRecord:
        """The attempt (or the wait) finished with ``output`` (inline JSON or a reference)."""
        _require(self, "succeeded")
        return replace(
            self,
            status=StepStatus.SUCCEEDED,
            output=output,
            error=None,
            error_detail=None,
            lease_until=None,
            finished_at=now,
            updated_at=now,
            version=self.version + 1,
        )

    def retry_scheduled(
        self, *, now: float, retry_at: float, error: str | None, error_detail: str | None = None
    ) -> StepRecord:
        """The attempt failed with ``error``; another is due at ``retry_at``."""
        _require(self, "retry_scheduled")
        return replace(
            self,
            status=StepStatus.PENDING,
            lease_until=None,
            error=error,
            error_detail=error_detail,
            retry_at=retry_at,
            updated_at=now,
            version=self.version + 1,
        )

    def failed(
        self, *, now: float, error: str | None, error_detail: str | None = None
    ) -> StepRecord:
        """The step will not be attempted again (out of attempts, rejected, lost)."""
        _require(self, "failed")
        return replace(
            self,
            status=StepStatus.FAILED,
            lease_until=None,
            error=error,
            error_detail=error_detail,
            retry_at=None,
            finished_at=now,
            updated_at=now,
            version=self.version + 1,
        )

    def skipped(self, *, now: float) -> StepRecord:
        """A step never attempted will not run: the run is compensating."""
        _require(self, "skipped")
        return replace(
            self,
            status=StepStatus.SKIPPED,
            finished_at=now,
            updated_at=now,
            version=self.version + 1,
        )

    def stopped_waiting(self, *, now: float) -> StepRecord:
        """A parked sleep or event wait ends unfinished: the run is compensating."""
        _require(self, "stopped_waiting")
        return replace(
            self,
            status=StepStatus.SKIPPED,
            lease_until=None,
            finished_at=now,
            error="stopped waiting: the run is compensating",
            error_detail=None,
            updated_at=now,
            version=self.version + 1,
        )

    def event_buffered(self, *, now: float, output: JSON) -> StepRecord:
        """An event for a wait the run has not reached yet, kept in the output until then."""
        _require(self, "event_buffered")
        return replace(self, output=output, updated_at=now, version=self.version + 1)

    # -- compensate ---------------------------------------------------------------

    def compensation_claimed(self, *, now: float, lease_until: float) -> StepRecord:
        """A worker takes the step's compensation for one attempt.

        The first compensation claim starts the compensation's retry budget.
        """
        _require(self, "compensation_claimed")
        is_first = self.status is not StepStatus.COMPENSATING
        return replace(
            self,
            status=StepStatus.COMPENSATING,
            attempt=self.attempt + 1,
            compensation_attempts=self.compensation_attempts + 1,
            budget_start=self.attempt if is_first else self.budget_start,
            lease_until=lease_until,
            retry_at=None,
            updated_at=now,
            version=self.version + 1,
        )

    def compensated(self, *, now: float) -> StepRecord:
        """The compensation succeeded: the step's effects are undone."""
        _require(self, "compensated")
        return replace(
            self,
            status=StepStatus.COMPENSATED,
            lease_until=None,
            retry_at=None,
            finished_at=now,
            updated_at=now,
            version=self.version + 1,
        )

    def compensation_retry_scheduled(
        self, *, now: float, retry_at: float, error: str | None, error_detail: str | None = None
    ) -> StepRecord:
        """The compensation attempt failed with ``error``; another is due at ``retry_at``."""
        _require(self, "compensation_retry_scheduled")
        return replace(
            self,
            lease_until=None,
            error=error,
            error_detail=error_detail,
            retry_at=retry_at,
            updated_at=now,
            version=self.version + 1,
        )

    def compensation_failed(
        self, *, now: float, error: str, error_detail: str | None = None
    ) -> StepRecord:
        """The compensation is out of attempts; it waits for a manual retry of the run."""
        _require(self, "compensation_failed")
        return replace(
            self,
            lease_until=None,
            retry_at=None,
            error=error,
            error_detail=error_detail,
            updated_at=now,
            version=self.version + 1,
        )

    # -- by hand ------------------------------------------------------------------

    def budget_reset(self, *, now: float) -> StepRecord:
        """A manual retry gives the step (or its compensation) a fresh retry budget."""
        _require(self, "budget_reset")
        return replace(
            self,
            budget_start=self.attempt,
            retry_at=None,
            updated_at=now,
            version=self.version + 1,
        )
