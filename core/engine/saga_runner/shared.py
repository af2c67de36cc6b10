"""What every path of the step protocol shares.

Its ports, running one attempt, the commit fenced by the claim, re-drive, and failing a
run this worker cannot run.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.domain.context import StepContext
from core.domain.errors_text import Redactor
from core.domain.records import Message, RunRecord, RunSnapshot, StateChange, StepRecord
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga, StepFunction
from core.domain.status import Action, RunStatus
from core.engine import planner
from core.engine.executor import AttemptExecutor, AttemptOutcome
from core.engine.outputs import OutputStorage
from core.engine.saga_runner.results import HandleResult, Outcome, RunnerSettings
from core.errors import ConcurrencyConflict, RequestRejected
from core.ports.clock import Clock
from core.ports.metrics import MetricsSink
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry

log = logging.getLogger("relay.engine")

ChangeBuilder = Callable[[Saga, RunSnapshot, StepRecord, AttemptOutcome], StateChange]
"""Builds the write that records ``outcome`` for the claimed step, from a fresh snapshot."""

_ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING})


def is_active(run: RunRecord) -> bool:
    """True while the run goes forward (neither compensating, cancelling nor ended)."""
    return run.status in _ACTIVE_RUN and not run.is_cancel_requested


def record_extra(record: StepRecord) -> dict[str, object]:
    """Log fields naming one step record."""
    return {"run_id": record.run_id, "step": record.name, "attempt": record.attempt}


def message_extra(message: Message) -> dict[str, object]:
    """Log fields naming one message."""
    return {
        "run_id": message.run_id,
        "saga": message.saga,
        "step": message.step,
        "action": message.action.value,
        "attempt": message.attempt,
    }


@dataclass(frozen=True, slots=True)
class RunnerPorts:
    """The ports and tunables every path of the protocol works through."""

    registry: SagaRegistry
    store: StateStore
    queue: TaskQueue
    clock: Clock
    outputs: OutputStorage
    executor: AttemptExecutor
    metrics: MetricsSink
    settings: RunnerSettings
    rng: random.Random


class SharedSteps:
    """The protocol steps the execute, compensate and wait paths have in common."""

    def __init__(self, ports: RunnerPorts) -> None:
        self.ports = ports

    def now(self) -> float:
        """The engine clock's time."""
        return self.ports.clock.now()

    def attempt(
        self,
        *,
        saga: Saga,
        snapshot: RunSnapshot,
        claimed: StepRecord,
        action: Action,
        fn: StepFunction,
        timeout_seconds: float,
        retry: RetryPolicy,
    ) -> AttemptOutcome:
        """Run one attempt of ``fn`` for the claimed step and record its metrics."""
        run, outputs = snapshot.run, self.ports.outputs
        run_input = outputs.resolve_input(run)
        started = time.perf_counter()
        own_output = None
        if action is Action.COMPENSATE and claimed.output is not None:
            own_output = outputs.resolve(
                run_id=run.run_id, step=claimed.name, stored=claimed.output
            )
        reason = run.compensation_reason if run.compensation_reason is not None else run.error
        ctx = StepContext(
            run_id=run.run_id,
            saga=saga.name,
            step=claimed.name,
            action=action,
            attempt=(
                claimed.compensation_attempts
                if action is Action.COMPENSATE
                else claimed.execute_attempts
            ),
            idempotency_key=f"{run.run_id}:{claimed.name}",
            input=saga.parse_input(run_input),
            outputs=outputs.outputs_of(snapshot),
            deadline_at=self.now() + timeout_seconds,
            output=own_output,
            error=reason if action is Action.COMPENSATE else None,
            chunks=(
                outputs.chunks_of(run_id=run.run_id, step=claimed.name)
                if action is Action.EXECUTE
                else None
            ),
        )
        outcome = self.ports.executor.run(fn, ctx, timeout_seconds=timeout_seconds, retry=retry)
        if not outcome.is_success:
            # Before anything stores or logs it: the run's secret input values and
            # credential-shaped text leave neither the public error nor the detail.
            outcome = outcome.redacted(Redactor.for_values(run_input, ctx.input))
            log.warning(
                "%s attempt %d of step %r failed: %s",
                action.value,
                ctx.attempt,
                claimed.name,
                outcome.detail,
                extra={"run_id": run.run_id, "step": claimed.name, "saga": saga.name},
            )
        status = (
            "succeeded"
            if outcome.is_success
            else ("failed" if outcome.is_retryable else "rejected")
        )
        self.ports.metrics.record_attempt(
            saga=saga.name,
            step=claimed.name,
            action=action.value,
            outcome=status,
            duration_seconds=time.perf_counter() - started,
        )
        return outcome

    def commit(
        self,
        saga: Saga,
        snapshot: RunSnapshot,
        claimed: StepRecord,
        outcome: AttemptOutcome,
        build: ChangeBuilder,
    ) -> HandleResult:
        """Write the attempt's result, fenced by the claim; re-decide on conflicts."""
        store = self.ports.store
        for _ in range(self.ports.settings.conflict_retries):
            change = build(saga, snapshot, claimed, outcome)
            try:
                self.store_change(change)
            except ConcurrencyConflict:
                fresh = store.load_run(run_id=claimed.run_id)
                if fresh is None or fresh.step(claimed.name).version != claimed.version:
                    log.warning(
                        "claim lost before commit; result discarded",
                        extra={"run_id": claimed.run_id, "step": claimed.name},
                    )
                    return HandleResult.ack(
                        Outcome.DISCARDED, "claim lost to a newer attempt; result discarded"
                    )
                snapshot = fresh
                continue
            except RequestRejected as exc:
                if not outcome.is_success:
                    raise
                # The store refuses the result itself (an output over its record limit and
                # no I/O manager to take it): the same output would be refused on every
                # attempt, so record the step as failed for good instead of looping.
                log.error(
                    "the state store refused the step's result; failing the step",
                    extra={"run_id": claimed.run_id, "step": claimed.name, "error": str(exc)},
                )
                outcome = AttemptOutcome(
                    is_success=False,
                    error=f"the step's result could not be stored: {exc}",
                    is_retryable=False,
                )
                continue
            if change.run is not None and change.run.status.is_terminal:
                self.ports.metrics.record_run(saga=saga.name, status=change.run.status.value)
                self.ports.outputs.on_run_ended(
                    change.run,
                    [*snapshot.steps.values(), *change.steps],
                    streaming=saga.streaming_steps,
                )
            return HandleResult.ack(Outcome.COMMITTED, "committed")
        return HandleResult.retry_later(1.0, "commit kept conflicting")

    def store_change(self, change: StateChange) -> None:
        """Apply ``change``; enqueue its outbox unless the store delivers it atomically."""
        self.ports.store.apply(change=change)
        if change.outbox and not self.ports.store.delivers_outbox:
            self.ports.queue.enqueue(messages=change.outbox)

    def redrive(self, saga: Saga, snapshot: RunSnapshot, reason: str) -> HandleResult:
        """Make sure the messages the current state needs exist, then acknowledge."""
        now = self.now()
        if snapshot.run.status is RunStatus.COMPENSATING and (
            planner.next_compensation_target(saga, snapshot.steps) is None
        ):
            finished = planner.finish_compensation(snapshot.run, now=now)
            self.store_change(finished)
            if finished.run is not None:
                self.ports.outputs.on_run_ended(
                    finished.run, snapshot.steps.values(), streaming=saga.streaming_steps
                )
            return HandleResult.ack(Outcome.FINISHED, f"{reason}; compensation finished")
        messages = planner.expected_messages(saga, snapshot, now=now)
        if messages:
            self.ports.queue.enqueue(messages=messages)
        return HandleResult.ack(Outcome.REDRIVEN, f"{reason}; re-drove {len(messages)} message(s)")

    def fail_run(self, snapshot: RunSnapshot, error: str) -> HandleResult:
        """Stop a run this worker cannot run; it waits FAILED for a fix and a manual retry."""
        run = snapshot.run
        log.error("run failed: %s", error, extra={"run_id": run.run_id})
        failed = run.failed(now=self.now(), error=error)
        self.ports.store.apply(change=StateChange(run.run_id, run=failed))
        self.ports.outputs.on_run_ended(failed, snapshot.steps.values())
        return HandleResult.ack(Outcome.RUN_FAILED, error)


def with_active_status(run: RunRecord, status: RunStatus, *, now: float) -> RunRecord | None:
    """The run moved to ``status`` (RUNNING or WAITING), or None when it is there already."""
    if status is run.status:
        return None
    if status is RunStatus.WAITING:
        return run.waiting(now=now)
    return run.running(now=now)
