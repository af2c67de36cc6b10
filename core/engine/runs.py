"""The caller side of runs: start, read, list, retry by hand and cancel."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.domain.records import (
    AuditEntry,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.run_ids import RunKey, new_run_id
from core.domain.status import RunStatus, StepStatus
from core.engine import planner
from core.engine.outputs import OutputStorage
from core.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReusedError,
    InfrastructureError,
    InvalidRunStateError,
    RunNotFoundError,
)
from core.ports.clock import Clock
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry

log = logging.getLogger("relay.runs")

_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPENSATING)


@dataclass(frozen=True, slots=True)
class StartResult:
    """The run a start request refers to, and whether this request created it."""

    run: RunRecord
    is_created: bool


class RunService:
    """Operations on runs as a whole; the worker side is ``SagaRunner``."""

    def __init__(
        self,
        *,
        registry: SagaRegistry,
        store: StateStore,
        queue: TaskQueue,
        clock: Clock,
        outputs: OutputStorage,
        conflict_retries: int = 10,
    ) -> None:
        self._registry = registry
        self._store = store
        self._queue = queue
        self._clock = clock
        self._outputs = outputs
        self._conflict_retries = conflict_retries

    def start(
        self, saga_name: str, raw_input: object, *, idempotency_key: str | None = None
    ) -> StartResult:
        """Validate the input and create the run with its first messages.

        ``idempotency_key`` is a client's key: it names a run in the client key space,
        never one a schedule or an event starts (``core.domain.run_ids``).

        Raises:
            InvalidIdempotencyKeyError: the key is not 1-200 printable ASCII characters.
            UnknownSagaError: no saga of that name (nothing written).
            InputValidationError: the input does not match the model (nothing written).
            InputTooLargeError: the input is too large to keep (nothing written).
            IdempotencyKeyReusedError: the key already started a run with other input.
        """
        key = RunKey.client(idempotency_key) if idempotency_key is not None else None
        return self.start_keyed(saga_name, raw_input, key=key)

    def start_keyed(self, saga_name: str, raw_input: object, *, key: RunKey | None) -> StartResult:
        """``start`` with a key of any space (the engine's schedules and events use this).

        An input over the inline limit is saved through the I/O manager first (under a
        content-addressed id, so a request reusing a key with other input cannot overwrite
        the run's) and the run record keeps a reference; steps and the run view see the
        real input (``resolved``).

        Raises:
            UnknownSagaError: no saga of that name (nothing written).
            InputValidationError: the input does not match the model (nothing written).
            InputTooLargeError: the input is too large to keep (nothing written).
            IdempotencyKeyReusedError: the key already started a run with other input.
        """
        saga = self._registry.get(saga_name)
        normalized = saga.validate_input(raw_input)
        prepared = self._outputs.prepare_input(saga=saga.name, value=normalized)
        now = self._clock.now()
        run_id = key.run_id(saga.name) if key is not None else new_run_id(now)
        run = RunRecord(
            run_id=run_id,
            saga=saga.name,
            status=RunStatus.PENDING,
            input=self._outputs.store_input(run_id=run_id, prepared=prepared),
            definition_hash=saga.definition_hash,
            created_at=now,
            updated_at=now,
            idempotency_key=key.text if key is not None else None,
        )
        steps = [StepRecord(run_id, StepName(name), updated_at=now) for name in saga.steps]
        outbox = [
            planner.execute_message(saga, step) for step in steps if not saga.steps[step.name].after
        ]
        stored, is_created = self._store.create_run(run=run, steps=steps, outbox=outbox)
        if not is_created:
            # The run id derives from saga and key, so only the input can differ.
            if not self._outputs.is_same_input(stored.input, prepared):
                raise IdempotencyKeyReusedError(run_id=stored.run_id, saga=stored.saga)
            if stored.status is not RunStatus.PENDING:
                return StartResult(stored, False)
        if not self._store.delivers_outbox:
            # Also heals a crash between an earlier create and its enqueue.
            self._queue.enqueue(messages=outbox)
        return StartResult(stored, is_created)

    def get(self, run_id: str) -> RunSnapshot:
        """The run with its steps.

        Raises:
            RunNotFoundError: no such run.
        """
        snapshot = self._store.load_run(run_id=RunId(run_id))
        if snapshot is None:
            raise RunNotFoundError(run_id=run_id)
        return snapshot

    def resolved(self, snapshot: RunSnapshot) -> RunSnapshot:
        """``snapshot`` with the run's real input and output in place of references.

        For reading only (the run view): never write the returned run back, its record
        would carry the offloaded values. A value the I/O manager no longer has (deleted
        by the bucket's lifecycle, docs/adr/0008) is left as its reference.
        """
        run = snapshot.run
        try:
            real_input = self._outputs.resolve_input(run)
            real_output = self._outputs.resolve_run_output(run)
        except KeyError:
            log.warning("offloaded input or output of run %s is gone", run.run_id)
            return snapshot
        if real_input is run.input and real_output is run.output:
            return snapshot
        real = dataclasses.replace(run, input=real_input, output=real_output)
        return RunSnapshot(real, snapshot.steps)

    def list(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Run headers, newest first."""
        return self._store.list_runs(saga=saga, statuses=statuses, limit=limit)

    def retry(self, run_id: str, *, audit: AuditEntry | None = None) -> RunRecord:
        """Resume a FAILED run where it stopped, with fresh retry budgets.

        A run that failed while compensating resumes compensating; one that failed
        before (definition drift, a saga the worker did not serve) resumes running.
        ``audit`` (who asked, from where) is appended to the run's audit trail in the
        same conditional write.

        Raises:
            RunNotFoundError: no such run.
            InvalidRunStateError: the run is not FAILED.
        """
        for _ in range(self._conflict_retries):
            snapshot = self.get(run_id)
            run = snapshot.run
            if run.status is not RunStatus.FAILED:
                raise InvalidRunStateError(
                    run_id=run_id, status=run.status, operation="retry", allowed=[RunStatus.FAILED]
                )
            saga = self._registry.get(run.saga)
            now = self._clock.now()
            was_compensating = run.is_cancel_requested or any(
                r.status in _COMPENSATION_PHASE for r in snapshot.steps.values()
            )
            refreshed = {
                name: r.budget_reset(now=now)
                for name, r in snapshot.steps.items()
                if r.status in (StepStatus.FAILED, StepStatus.COMPENSATING, StepStatus.PENDING)
                and r.attempt > r.budget_start
            }
            new_run = run.retried(
                now=now, definition_hash=saga.definition_hash, is_compensating=was_compensating
            ).audited(audit)
            status = new_run.status
            view = RunSnapshot(new_run, {**snapshot.steps, **refreshed})
            change = StateChange(
                new_run.run_id,
                run=new_run,
                steps=tuple(refreshed.values()),
                outbox=tuple(planner.expected_messages(saga, view, now=now)),
            )
            try:
                self._apply(change)
            except ConcurrencyConflict:
                continue
            log.info("run retried by hand", extra={"run_id": run_id, "status": status.value})
            return new_run
        raise ConcurrencyConflict(run_id=run_id, detail="run kept changing during retry")

    def cancel(self, run_id: str, *, audit: AuditEntry | None = None) -> RunRecord:
        """Stop a run: undo finished steps in reverse order, then end CANCELLED.

        ``audit`` (who asked, from where) is appended to the run's audit trail in the
        same conditional write.

        Raises:
            RunNotFoundError: no such run.
            InvalidRunStateError: the run already ended.
        """
        for _ in range(self._conflict_retries):
            snapshot = self.get(run_id)
            run = snapshot.run
            if run.status.is_terminal:
                raise InvalidRunStateError(
                    run_id=run_id,
                    status=run.status,
                    operation="cancel",
                    allowed=[s.value for s in _ACTIVE],
                )
            now = self._clock.now()
            streaming: frozenset[str] = frozenset()
            if run.status is RunStatus.COMPENSATING:
                change = StateChange(run.run_id, run=run.cancel_requested(now=now).audited(audit))
            else:
                saga = self._registry.get(run.saga)
                streaming = saga.streaming_steps
                new_run, changed, outbox = planner.begin_compensation(
                    saga, run, snapshot.steps, now=now, error="cancelled by request", is_cancel=True
                )
                change = StateChange(
                    run.run_id,
                    run=new_run.audited(audit),
                    steps=tuple(changed),
                    outbox=tuple(outbox),
                )
            try:
                self._apply(change, snapshot.steps.values(), streaming=streaming)
            except ConcurrencyConflict:
                continue
            assert change.run is not None
            return change.run
        raise ConcurrencyConflict(run_id=run_id, detail="run kept changing during cancel")

    def _apply(
        self,
        change: StateChange,
        steps: Iterable[StepRecord] = (),
        *,
        streaming: frozenset[str] = frozenset(),
    ) -> None:
        self._store.apply(change=change)
        if change.outbox and not self._store.delivers_outbox:
            self._queue.enqueue(messages=change.outbox)
        if change.run is not None and change.run.status.is_terminal:
            try:
                self._outputs.on_run_ended(change.run, [*steps, *change.steps], streaming=streaming)
            except InfrastructureError as exc:  # the run ended; a stray delivery heals it
                log.warning(
                    "run %s ended but its outputs' retention could not be started: %s",
                    change.run.run_id,
                    exc,
                )


_COMPENSATION_PHASE = frozenset(
    {StepStatus.FAILED, StepStatus.COMPENSATING, StepStatus.COMPENSATED, StepStatus.SKIPPED}
)
