"""Persisted records of a run: one header per run and one record per step.

Records are frozen; every change is a named transition (``StepRecord.claimed``,
``RunRecord.compensating``, ...) that returns a new record whose ``version`` is one
higher, and adapters write it only if the stored version is still the one it was derived
from (optimistic concurrency, see docs/adr/0001-optimistic-concurrency.md). A transition
called from a status that does not allow it raises ``IllegalTransitionError`` before
anything is written.

The statuses each transition is allowed from are in ``core.domain.status``
(``STEP_TRANSITIONS``, ``RUN_TRANSITIONS``). ``StepRecord`` lives in
``core.domain.step_record`` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from core.domain.audit import AuditEntry, appended
from core.domain.messages import MESSAGE_FORMAT, Message, RunId, StepName
from core.domain.status import RUN_TRANSITIONS, RunStatus
from core.domain.step_record import JSON, StepRecord
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


def _require(record: RunRecord, transition: str) -> None:
    """Raise ``IllegalTransitionError`` unless the run's status allows ``transition``."""
    allowed = RUN_TRANSITIONS[transition]
    if record.status in allowed:
        return
    raise IllegalTransitionError(
        record=f"run {record.run_id}",
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

    ``error`` is public (what every reader of the run sees: a code and a generic message
    unless the exception opted in to a public one); ``error_detail`` is the full text
    behind it, secrets redacted, for readers allowed to see the run's data and for logs
    (``core.domain.errors_text``). It is None when there is nothing beyond ``error``.
    When ``error`` returns to the compensation reason (after a manual retry, at the end
    of compensation), the detail stays only if it still belongs to that error; the failed
    step's record keeps its own.
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

    error_detail: str | None = None

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
            error_detail=None,
            updated_at=now,
            version=self.version + 1,
        )

    def compensating(
        self, *, now: float, reason: str, is_cancel: bool, reason_detail: str | None = None
    ) -> RunRecord:
        """Undo the finished steps because of ``reason`` (a failure, or a cancel request)."""
        _require(self, "compensating")
        return replace(
            self,
            status=RunStatus.COMPENSATING,
            error=reason,
            error_detail=reason_detail,
            compensation_reason=reason,
            is_cancel_requested=self.is_cancel_requested or is_cancel,
            updated_at=now,
            version=self.version + 1,
        )

    def closed_without_compensation(
        self, *, now: float, reason: str, is_cancel: bool, reason_detail: str | None = None
    ) -> RunRecord:
        """Stop because of ``reason`` when no finished step needs undoing."""
        _require(self, "closed_without_compensation")
        is_cancelled = self.is_cancel_requested or is_cancel
        return replace(
            self,
            status=RunStatus.CANCELLED if is_cancelled else RunStatus.COMPENSATED,
            error=reason,
            error_detail=reason_detail,
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
            error_detail=self._detail_if_error_is(
                self.compensation_reason if self.compensation_reason is not None else self.error
            ),
            updated_at=now,
            version=self.version + 1,
        )

    def cancel_requested(self, *, now: float) -> RunRecord:
        """A cancel arrived while compensating: the run will end CANCELLED."""
        _require(self, "cancel_requested")
        return replace(self, is_cancel_requested=True, updated_at=now, version=self.version + 1)

    def failed(self, *, now: float, error: str, error_detail: str | None = None) -> RunRecord:
        """The run cannot go on without a person: ``error`` says why and what to do."""
        _require(self, "failed")
        return replace(
            self,
            status=RunStatus.FAILED,
            error=error,
            error_detail=error_detail,
            updated_at=now,
            version=self.version + 1,
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
            error_detail=self._detail_if_error_is(self.compensation_reason)
            if is_compensating
            else None,
            definition_hash=definition_hash,
            updated_at=now,
            version=self.version + 1,
        )

    def _detail_if_error_is(self, error: str | None) -> str | None:
        """The current detail when ``error`` is still the current error, else None."""
        return self.error_detail if error is not None and error == self.error else None

    def redriven(self, *, now: float) -> RunRecord:
        """The next version after the sweeper re-drove the run at ``now``.

        ``updated_at`` stays: the sweeper's bookkeeping is not progress of the run.
        """
        _require(self, "redriven")
        return replace(
            self, version=self.version + 1, redrive_count=self.redrive_count + 1, redriven_at=now
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
