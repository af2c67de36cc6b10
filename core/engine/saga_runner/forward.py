"""The writes that move a step forward: success, or a failure (retry, or compensate).

Success decides what becomes ready and whether the run completed; failure schedules a
delayed retry or starts compensation.

Both the execute path and the wait path commit through these builders, so a step that
ran, a sleep that woke and an event that arrived all finish the same way.
"""

from __future__ import annotations

from typing import Any

from core.domain.records import RunRecord, RunSnapshot, StateChange, StepName, StepRecord
from core.domain.saga import Saga
from core.engine import planner
from core.engine.executor import AttemptOutcome
from core.engine.outputs import to_json_value
from core.engine.retry import backoff_delay_seconds, has_attempts_left
from core.engine.saga_runner.shared import SharedSteps, is_active, with_active_status


class ForwardChanges:
    """Builds the state change that records a forward attempt's outcome."""

    def __init__(self, shared: SharedSteps) -> None:
        self._shared = shared

    def execute_change(
        self, saga: Saga, snapshot: RunSnapshot, claimed: StepRecord, outcome: AttemptOutcome
    ) -> StateChange:
        """The commit of an attempt of the claimed (or parked) step (a ``ChangeBuilder``)."""
        now = self._shared.now()
        if not outcome.is_success:
            return self.failure_change(saga, snapshot, claimed, outcome, now)
        done = claimed.succeeded(now=now, output=outcome.value)
        return self._success_change(saga, snapshot, done, now)

    def event_change(
        self, saga: Saga, snapshot: RunSnapshot, record: StepRecord, outcome: AttemptOutcome
    ) -> StateChange:
        """The commit of an event wait that finds its event already buffered.

        ``record`` is the PENDING step as read: the commit is fenced by its version, and
        the attempt and start are recorded by this write (a ``ChangeBuilder``).
        """
        now = self._shared.now()
        done = record.event_taken(now=now, output=outcome.value)
        return self._success_change(saga, snapshot, done, now)

    def _success_change(
        self, saga: Saga, snapshot: RunSnapshot, done: StepRecord, now: float
    ) -> StateChange:
        run = snapshot.run
        steps = {**snapshot.steps, done.name: done}
        if not is_active(run):
            # Compensation began meanwhile; it waits for this step and then undoes it.
            return StateChange(run.run_id, steps=(done,))
        ready, checks, is_complete = planner.success_follow_up(saga, steps, done.name)
        if is_complete:
            new_run: RunRecord | None = run.completed(
                now=now, output=self._run_output(saga, run, steps)
            )
        else:
            status = planner.active_status(saga, steps, starting=ready)
            new_run = with_active_status(run, status, now=now)
        outbox = tuple(planner.execute_message(saga, steps[name]) for name in ready)
        return StateChange(
            run.run_id, run=new_run, steps=(done,), checks=tuple(checks), outbox=outbox
        )

    def _run_output(self, saga: Saga, run: RunRecord, steps: dict[StepName, StepRecord]) -> Any:
        """The run's stored output; a custom builder sees real outputs, references loaded.

        Over the inline limit it goes through the I/O manager like a step's output.
        """
        storage = self._shared.ports.outputs
        if saga.output is None:
            value: Any = {name: record.output for name, record in steps.items()}
        else:
            built = saga.build_output(storage.outputs_of(RunSnapshot(run, steps)))
            value = to_json_value(built, step="<run output>")
        return storage.store_run_output(run_id=run.run_id, value=value)

    def failure_change(
        self,
        saga: Saga,
        snapshot: RunSnapshot,
        record: StepRecord,
        outcome: AttemptOutcome,
        now: float,
    ) -> StateChange:
        """A failed attempt: retry later if the policy allows, else fail and compensate.

        A ``fail_safe`` step that fails for good does not compensate: it stays FAILED and
        the run moves on as after a success.
        """
        run = snapshot.run
        definition = saga.steps[record.name]
        used = record.attempts_in_budget
        is_running = is_active(run)
        if is_running and outcome.is_retryable and has_attempts_left(definition.retry, used=used):
            retry_at = now + backoff_delay_seconds(
                definition.retry, failed_attempts=used, rng=self._shared.ports.rng
            )
            pending = record.retry_scheduled(
                now=now, retry_at=retry_at, error=outcome.error, error_detail=outcome.detail
            )
            retry = planner.execute_message(saga, record, not_before=retry_at)
            return StateChange(run.run_id, steps=(pending,), outbox=(retry,))
        failed = record.failed(now=now, error=outcome.error, error_detail=outcome.detail)
        if not is_running:
            return StateChange(run.run_id, steps=(failed,))
        if definition.fail_safe:
            # The run goes on without this step's output (``planner.is_done``).
            return self._success_change(saga, snapshot, failed, now)
        why = f"step {record.name!r} failed after {record.execute_attempts} attempt(s)"
        new_run, changed, outbox = planner.begin_compensation(
            saga,
            run,
            {**snapshot.steps, failed.name: failed},
            now=now,
            error=f"{why}: {outcome.error}",
            error_detail=f"{why}: {outcome.detail}",
        )
        return StateChange(run.run_id, run=new_run, steps=(failed, *changed), outbox=tuple(outbox))
