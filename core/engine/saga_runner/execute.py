"""The execute path: claim the step with a lease, run it with a timeout, commit the result.

Waiting steps leave this path for ``waits``; everything that is not the step's turn
(a live lease elsewhere, a retry not yet due, unfinished dependencies, an already
finished step) is answered without claiming.
"""

from __future__ import annotations

from core.domain.context import StreamedOutput
from core.domain.records import Message, RunSnapshot, StateChange, StepRecord
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus, StepStatus
from core.engine import planner
from core.engine.executor import AttemptOutcome
from core.engine.outputs import stream_reference, to_json_value
from core.engine.retry import has_attempts_left
from core.engine.saga_runner.forward import ForwardChanges
from core.engine.saga_runner.results import HandleResult, Outcome
from core.engine.saga_runner.shared import SharedSteps, is_active
from core.engine.saga_runner.waits import WaitPath
from core.errors import ConfigurationError, NonRetryableStepError, RequestRejected


class ExecutePath:
    """Handles EXECUTE messages."""

    def __init__(self, shared: SharedSteps, forward: ForwardChanges, waits: WaitPath) -> None:
        self._shared = shared
        self._forward = forward
        self._waits = waits

    def on_execute(self, saga: Saga, snapshot: RunSnapshot, message: Message) -> HandleResult:
        """Run one attempt of the message's step if it is the step's turn."""
        shared = self._shared
        run, now = snapshot.run, shared.now()
        record = snapshot.step(message.step)
        if not is_active(run):
            return shared.redrive(saga, snapshot, f"run is {run.status}")
        definition = saga.steps[record.name]
        wait = definition.wait
        if wait is not None and record.status is StepStatus.RUNNING:
            return self._waits.on_wake(saga, snapshot, message)
        not_now = self._why_not_execute(saga, snapshot, record, message, now)
        if not_now is not None:
            return not_now
        if wait is not None:
            return self._waits.begin_wait(saga, snapshot, record, wait)
        error, detail = record.error, record.error_detail
        if record.status is StepStatus.RUNNING:
            error = f"attempt {record.execute_attempts} lost its lease (worker crashed or overran)"
            detail = None
        if not has_attempts_left(definition.retry, used=record.attempts_in_budget):
            outcome = AttemptOutcome(
                is_success=False, error=error, error_detail=detail, is_retryable=False
            )
            shared.store_change(self._forward.failure_change(saga, snapshot, record, outcome, now))
            return HandleResult.ack(Outcome.EXHAUSTED, "no attempts left; compensating")
        lease_until = now + definition.timeout_seconds + shared.ports.settings.lease_grace_seconds
        claimed = record.claimed(now=now, lease_until=lease_until, error=error, error_detail=detail)
        new_run = (
            run.running(now=now) if run.status in (RunStatus.PENDING, RunStatus.WAITING) else None
        )
        shared.ports.store.apply(change=StateChange(run.run_id, run=new_run, steps=(claimed,)))
        snapshot = RunSnapshot(new_run or run, {**snapshot.steps, claimed.name: claimed})
        outcome = shared.attempt(
            saga=saga,
            snapshot=snapshot,
            claimed=claimed,
            action=Action.EXECUTE,
            fn=definition.fn,
            timeout_seconds=definition.timeout_seconds,
            retry=definition.retry,
        )
        if outcome.is_success:
            try:
                if isinstance(outcome.value, StreamedOutput):
                    stored = stream_reference(outcome.value.count)
                else:
                    value = to_json_value(outcome.value, step=claimed.name)
                    stored = shared.ports.outputs.store(
                        run_id=run.run_id, step=claimed.name, value=value
                    )
                outcome = AttemptOutcome(is_success=True, value=stored)
            except (NonRetryableStepError, ConfigurationError, RequestRejected) as exc:
                # The output cannot be kept (not JSON, no I/O manager, refused by it):
                # another attempt would produce the same output, so the step fails now.
                outcome = AttemptOutcome(is_success=False, error=str(exc), is_retryable=False)
        return shared.commit(saga, snapshot, claimed, outcome, self._forward.execute_change)

    def _why_not_execute(
        self,
        saga: Saga,
        snapshot: RunSnapshot,
        record: StepRecord,
        message: Message,
        now: float,
    ) -> HandleResult | None:
        """The answer when this delivery must not claim the step now; None when it may."""
        if record.status is StepStatus.RUNNING and record.has_live_lease(now):
            assert record.lease_until is not None
            return HandleResult.retry_later(
                record.lease_until - now, "another worker holds the step"
            )
        if record.status is StepStatus.PENDING:
            if record.retry_at is not None and record.retry_at > now:
                if message.attempt <= record.attempt:
                    return self._shared.redrive(
                        saga, snapshot, "stale delivery of a failed attempt"
                    )
                return HandleResult.retry_later(record.retry_at - now, "retry not due yet")
            if not planner.deps_done(saga, snapshot.steps, record.name):
                return HandleResult.ack(
                    Outcome.DROPPED, "dependencies unfinished; they will enqueue this step"
                )
        elif record.status is not StepStatus.RUNNING:
            return self._shared.redrive(saga, snapshot, f"step already {record.status}")
        return None
