"""The compensation path: undo finished steps one at a time, in reverse order.

Each compensation is itself a claimed, retried, idempotent attempt with its own retry
budget; one that keeps failing leaves the run FAILED with the error and the way to retry
it by hand, never silently stuck.
"""

from __future__ import annotations

import logging

from core.domain.records import Message, RunRecord, RunSnapshot, StateChange, StepRecord
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus, StepStatus
from core.engine import planner
from core.engine.executor import AttemptOutcome
from core.engine.retry import backoff_delay_seconds, has_attempts_left
from core.engine.saga_runner.results import HandleResult, Outcome
from core.engine.saga_runner.shared import SharedSteps
from core.errors import CompensationFailed

log = logging.getLogger("relay.engine")


class CompensatePath:
    """Handles COMPENSATE messages."""

    def __init__(self, shared: SharedSteps) -> None:
        self._shared = shared

    def on_compensate(self, saga: Saga, snapshot: RunSnapshot, message: Message) -> HandleResult:
        """Run one compensation attempt if the message's step is the one to undo now."""
        shared = self._shared
        run, now = snapshot.run, shared.now()
        if run.status is not RunStatus.COMPENSATING:
            return HandleResult.ack(Outcome.DROPPED, f"run is {run.status}; nothing to compensate")
        target = planner.next_compensation_target(saga, snapshot.steps)
        if target is None:
            shared.store_change(planner.finish_compensation(run, now=now))
            return HandleResult.ack(Outcome.FINISHED, "compensation finished")
        if target != message.step:
            return shared.redrive(saga, snapshot, f"compensation is at step {target!r}")
        record = snapshot.step(target)
        definition = saga.steps[target]
        if record.has_live_lease(now):
            assert record.lease_until is not None
            return HandleResult.retry_later(record.lease_until - now, "step still in progress")
        if record.status is StepStatus.COMPENSATING and record.retry_at and record.retry_at > now:
            if message.attempt <= record.attempt:
                return shared.redrive(saga, snapshot, "stale delivery of a failed compensation")
            return HandleResult.retry_later(record.retry_at - now, "retry not due yet")
        if record.status is StepStatus.RUNNING and not definition.compensate_on_failure:
            lost = record.failed(now=now, error=f"attempt {record.execute_attempts} lost its lease")
            shared.ports.store.apply(change=StateChange(run.run_id, steps=(lost,)))
            return shared.redrive(
                saga, RunSnapshot(run, {**snapshot.steps, target: lost}), "moved on"
            )
        compensation = definition.compensation
        assert compensation is not None  # next_compensation_target only picks compensable steps
        if not has_attempts_left(compensation.retry, used=record.compensation_attempts_in_budget):
            outcome = AttemptOutcome(
                is_success=False,
                error=record.error or "lost its lease",
                error_detail=record.error_detail,
                is_retryable=False,
            )
            shared.store_change(self._compensation_change(saga, snapshot, record, outcome))
            return HandleResult.ack(Outcome.EXHAUSTED, "compensation out of attempts; run FAILED")
        timeout = definition.compensation_timeout_seconds
        lease_until = now + timeout + shared.ports.settings.lease_grace_seconds
        claimed = record.compensation_claimed(now=now, lease_until=lease_until)
        shared.ports.store.apply(change=StateChange(run.run_id, steps=(claimed,)))
        snapshot = RunSnapshot(run, {**snapshot.steps, target: claimed})
        outcome = shared.attempt(
            saga=saga,
            snapshot=snapshot,
            claimed=claimed,
            action=Action.COMPENSATE,
            fn=compensation.fn,
            timeout_seconds=timeout,
            retry=compensation.retry,
        )
        return shared.commit(saga, snapshot, claimed, outcome, self._compensation_change)

    def _compensation_change(
        self, saga: Saga, snapshot: RunSnapshot, claimed: StepRecord, outcome: AttemptOutcome
    ) -> StateChange:
        """The commit of a compensation attempt (a ``ChangeBuilder``)."""
        shared = self._shared
        now = shared.now()
        run = snapshot.run
        compensation = saga.steps[claimed.name].compensation
        assert compensation is not None
        if outcome.is_success:
            done = claimed.compensated(now=now)
            steps = {**snapshot.steps, done.name: done}
            target = planner.next_compensation_target(saga, steps)
            if target is None:
                finished = run.compensation_finished(now=now)
                return StateChange(run.run_id, run=finished, steps=(done,))
            return StateChange(
                run.run_id,
                steps=(done,),
                outbox=(planner.compensation_message(saga, steps, target),),
            )
        used = claimed.attempts_in_budget
        if outcome.is_retryable and has_attempts_left(compensation.retry, used=used):
            retry_at = now + backoff_delay_seconds(
                compensation.retry, failed_attempts=used, rng=shared.ports.rng
            )
            waiting = claimed.compensation_retry_scheduled(
                now=now, retry_at=retry_at, error=outcome.error, error_detail=outcome.detail
            )
            retry = planner.compensation_message(saga, {waiting.name: waiting}, waiting.name)
            return StateChange(run.run_id, steps=(waiting,), outbox=(retry,))
        public = self._failed_error(run, claimed, outcome.error)
        detail = self._failed_error(run, claimed, outcome.detail)
        stuck = claimed.compensation_failed(
            now=now,
            error=f"compensation failed: {outcome.error}",
            error_detail=f"compensation failed: {outcome.detail}",
        )
        log.error(
            "compensation exhausted its retries: %s",
            outcome.detail,  # redacted by SharedSteps.attempt
            extra={"run_id": run.run_id, "step": claimed.name},
        )
        failed = run.failed(now=now, error=public, error_detail=detail)
        return StateChange(run.run_id, run=failed, steps=(stuck,))

    @staticmethod
    def _failed_error(run: RunRecord, claimed: StepRecord, reason: str | None) -> str:
        """The run's error when ``claimed``'s compensation ran out of attempts over ``reason``."""
        return str(
            CompensationFailed(
                run_id=run.run_id,
                step=claimed.name,
                attempt=claimed.compensation_attempts,
                reason=reason or "?",
            )
        )
