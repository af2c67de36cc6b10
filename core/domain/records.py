"""Persisted records of a run: one header per run and one record per step.

Records are frozen; every change is a named transition (``StepRecord.claimed``,
``RunRecord.compensating``, ...) that returns a new record whose ``version`` is one
higher, and adapters write it only if the stored version is still the one it was derived
from (optimistic concurrency, see docs/adr/0001-optimistic-concurrency.md). A transition
called from a status that does not allow it raises ``IllegalTransitionError`` before
anything is written.

The statuses each transition is allowed from are in ``core.domain.status``
(``STEP_TRANSITIONS``, ``RUN_TRANSITIONS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from core.domain.audit import AuditEntry, appended
from core.domain.messages import MESSAGE_FORMAT, Message, RunId, StepName
from core.domain.status import RUN_TRANSITIONS, STEP_TRANSITIONS, RunStatus, StepStatus
from core.errors import IllegalTransitionError

__all__ = [
    "JSON",
    "MESSAGE_FORMAT",
    "AuditEntry",
    "Message",
    "RunId",
    "RunRecord",
    "RunSnapshot",
    "StateChange",
    "StepName",
    "StepRecord",
    "VersionCheck",
]

JSON = Any
"""A JSON value (dict, list, str, int, float, bool or None) as produced by ``json.loads``."""


def _require(record: RunRecord | StepRecord, transition: str) -> None:
    """Raise ``IllegalTransitionError`` unless the record's status allows ``transition``."""
    if isinstance(record, RunRecord):
        allowed: frozenset[RunStatus] | frozenset[StepStatus] = RUN_TRANSITIONS[transition]
        name = f"run {record.run_id}"
    else:
        allowed = STEP_TRANSITIONS[transition]
        name = f"step {record.name!r} of run {record.run_id}"
    if record.status in allowed:
        return
    raise IllegalTransitionError(
        record=name,
        transition=transition,
        status=record.status.value,
        allowed=sorted(s.value for s in allowed),
    )


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The header of one run of a saga.

    ``definition_hash`` is the content hash of the saga definition the run started under;
    ``is_cancel_requested`` makes the compensation end in CANCELLED instead of COMPENSATED.
    ``error`` is the run's current error: why it is compensating (or ended compensated,
    cancelled), or why it stopped FAILED and what to do about it. ``compensation_reason``
    keeps why compensation began (the failure or the cancel request) through a failed
    compensation and a manual retry, so the error of a retried run that then ends
    COMPENSATED is that reason again, not the instruction to retry.
    ``redrive_count`` and ``redriven_at`` are the sweeper's bookkeeping: how often it
    re-drove the run and when it last did, so its back-off survives a fresh container
    (``core/engine/sweeper.py``).
    """

    run_id: RunId
    saga: str
    status: RunStatus
    input: JSON
    definition_hash: str
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    output: JSON = None
    error: str | None = None
    compensation_reason: str | None = None
    is_cancel_requested: bool = False
    version: int = 1
    redrive_count: int = 0
    redriven_at: float | None = None
    # Operator actions (retry, cancel by hand), oldest first: core/domain/audit.py.
    audit: tuple[AuditEntry, ...] = ()

    def audited(self, entry: AuditEntry | None) -> RunRecord:
        """This record with ``entry`` appended to its audit trail, at the same version.

        The entry rides on the transition it records (retried, compensating...).
        """
        return replace(self, audit=appended(self.audit, entry))

    def running(self, *, now: float) -> RunRecord:
        """A step started or a retry is due: the run is RUNNING."""
        _require(self, "running")
        return replace(self, status=RunStatus.RUNNING, updated_at=now, version=self.version + 1)

    def waiting(self, *, now: float) -> RunRecord:
        """Only parked steps (sleeps, event waits) remain: the run is WAITING."""
        _require(self, "waiting")
        return replace(self, status=RunStatus.WAITING, updated_at=now, version=self.version + 1)

    def completed(self, *, now: float, output: JSON) -> RunRecord:
        """Every step succeeded; ``output`` is the run's output."""
        _require(self, "completed")
        return replace(
            self,
            status=RunStatus.COMPLETED,
            output=output,
            error=None,
            updated_at=now,
            version=self.version + 1,
        )

    def compensating(self, *, now: float, reason: str, is_cancel: bool) -> RunRecord:
        """Undo the finished steps because of ``reason`` (a failure, or a cancel request)."""
        _require(self, "compensating")
        return replace(
            self,
            status=RunStatus.COMPENSATING,
            error=reason,
            compensation_reason=reason,
            is_cancel_requested=self.is_cancel_requested or is_cancel,
            updated_at=now,
            version=self.version + 1,
        )

    def closed_without_compensation(self, *, now: float, reason: str, is_cancel: bool) -> RunRecord:
        """Stop because of ``reason`` when no finished step needs undoing."""
        _require(self, "closed_without_compensation")
        is_cancelled = self.is_cancel_requested or is_cancel
        return replace(
            self,
            status=RunStatus.CANCELLED if is_cancelled else RunStatus.COMPENSATED,
            error=reason,
            compensation_reason=reason,
            is_cancel_requested=is_cancelled,
            updated_at=now,
            version=self.version + 1,
        )

    def compensation_finished(self, *, now: float) -> RunRecord:
        """Every compensation ran: CANCELLED when cancelled by request, else COMPENSATED.

        The error becomes (again) why the run compensated, which also replaces the
        instruction to retry that a failed compensation left before a manual retry.
        """
        _require(self, "compensation_finished")
        return replace(
            self,
            status=RunStatus.CANCELLED if self.is_cancel_requested else RunStatus.COMPENSATED,
            error=self.compensation_reason if self.compensation_reason is not None else self.error,
            updated_at=now,
            version=self.version + 1,
        )

    def cancel_requested(self, *, now: float) -> RunRecord:
        """A cancel arrived while compensating: the run will end CANCELLED."""
        _require(self, "cancel_requested")
        return replace(self, is_cancel_requested=True, updated_at=now, version=self.version + 1)

    def failed(self, *, now: float, error: str) -> RunRecord:
        """The run cannot go on without a person: ``error`` says why and what to do."""
        _require(self, "failed")
        return replace(
            self, status=RunStatus.FAILED, error=error, updated_at=now, version=self.version + 1
        )

    def retried(self, *, now: float, definition_hash: str, is_compensating: bool) -> RunRecord:
        """A FAILED run resumed by hand, under ``definition_hash``.

        A run that failed while compensating resumes compensating, its error again the
        reason it compensates; one that failed before resumes running, with no error.
        """
        _require(self, "retried")
        return replace(
            self,
            status=RunStatus.COMPENSATING if is_compensating else RunStatus.RUNNING,
            error=self.compensation_reason if is_compensating else None,
            definition_hash=definition_hash,
            updated_at=now,
            version=self.version + 1,
        )

    def redriven(self, *, now: float) -> RunRecord:
        """The next version after the sweeper re-drove the run at ``now``.

        ``updated_at`` stays: the sweeper's bookkeeping is not progress of the run.
        """
        _require(self, "redriven")
        return replace(
            self, version=self.version + 1, redrive_count=self.redrive_count + 1, redriven_at=now
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

    def claimed(self, *, now: float, lease_until: float, error: str | None) -> StepRecord:
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
            lease_until=None,
            finished_at=now,
            updated_at=now,
            version=self.version + 1,
        )

    def retry_scheduled(self, *, now: float, retry_at: float, error: str | None) -> StepRecord:
        """The attempt failed with ``error``; another is due at ``retry_at``."""
        _require(self, "retry_scheduled")
        return replace(
            self,
            status=StepStatus.PENDING,
            lease_until=None,
            error=error,
            retry_at=retry_at,
            updated_at=now,
            version=self.version + 1,
        )

    def failed(self, *, now: float, error: str | None) -> StepRecord:
        """The step will not be attempted again (out of attempts, rejected, lost)."""
        _require(self, "failed")
        return replace(
            self,
            status=StepStatus.FAILED,
            lease_until=None,
            error=error,
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
        self, *, now: float, retry_at: float, error: str | None
    ) -> StepRecord:
        """The compensation attempt failed with ``error``; another is due at ``retry_at``."""
        _require(self, "compensation_retry_scheduled")
        return replace(
            self,
            lease_until=None,
            error=error,
            retry_at=retry_at,
            updated_at=now,
            version=self.version + 1,
        )

    def compensation_failed(self, *, now: float, error: str) -> StepRecord:
        """The compensation is out of attempts; it waits for a manual retry of the run."""
        _require(self, "compensation_failed")
        return replace(
            self,
            lease_until=None,
            retry_at=None,
            error=error,
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


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run header with all its step records, read together."""

    run: RunRecord
    steps: Mapping[StepName, StepRecord]

    def step(self, name: str) -> StepRecord:
        """The record of step ``name``; raises ``KeyError`` when the run has no such step."""
        return self.steps[StepName(name)]


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """A read-set entry: the write is valid only if this step is still at ``version``."""

    step: StepName
    version: int


@dataclass(frozen=True, slots=True)
class StateChange:
    """One atomic, conditional write to a run.

    Each record in ``run`` / ``steps`` replaces the stored record whose version is
    ``record.version - 1``; each ``checks`` entry asserts a step is unchanged without
    writing it. ``outbox`` holds the messages the change makes due: they must be
    enqueued if and only if the change commits (atomically by stores that share a
    transaction with the queue, otherwise by the engine right after the write).
    """

    run_id: RunId
    run: RunRecord | None = None
    steps: tuple[StepRecord, ...] = ()
    checks: tuple[VersionCheck, ...] = ()
    outbox: tuple[Message, ...] = field(default=())
