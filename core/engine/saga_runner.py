"""The worker side of the step protocol: one queue message in, one outcome out.

Load → (re-drive if finished) → claim with a lease → execute with a timeout → commit
fenced by the claim → enqueue what became ready (DESIGN.md, "The step protocol").
Correctness never depends on the queue: every branch below is safe to run twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.domain.context import StepContext
from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga, StepDefinition, StepFunction, WaitSpec
from core.domain.status import Action, RunStatus, StepStatus
from core.engine import planner
from core.engine.executor import AttemptOutcome, StepExecutor
from core.engine.outputs import OutputStorage, to_json_value
from core.engine.retry import backoff_delay_seconds, has_attempts_left
from core.errors import (
    CompensationFailed,
    ConcurrencyConflict,
    ConfigurationError,
    NonRetryableStepError,
    UnknownSagaError,
)
from core.faults import CRASH_EXIT_CODE, FaultKind, FaultPlan, InjectedFault
from core.ports.clock import Clock
from core.ports.metrics import MetricsSink
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry

log = logging.getLogger("relay.engine")

_ChangeBuilder = Callable[[Saga, RunSnapshot, StepRecord, AttemptOutcome], StateChange]


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Tunables of the protocol.

    ``lease_grace_seconds`` is added to a step's timeout to form its lease, so a slow
    commit after a long attempt is not mistaken for a crash. ``conflict_retries`` bounds
    how often a decision is re-read and re-made after losing a conditional write.
    """

    lease_grace_seconds: float = 5.0
    conflict_retries: int = 10
    inline_output_limit_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class HandleResult:
    """What to tell the queue: done (acknowledge) or deliver again after a delay."""

    is_done: bool
    detail: str
    retry_after_seconds: float = 0.0

    @classmethod
    def ack(cls, detail: str) -> HandleResult:
        """The message needs no further delivery."""
        return cls(True, detail)

    @classmethod
    def retry_later(cls, seconds: float, detail: str) -> HandleResult:
        """Deliver the message again after ``seconds`` (a live lease, an early delivery)."""
        return cls(False, detail, max(seconds, 0.05))


class SagaRunner:
    """Handles step messages for the sagas in its registry."""

    def __init__(
        self,
        *,
        registry: SagaRegistry,
        store: StateStore,
        queue: TaskQueue,
        clock: Clock,
        outputs: OutputStorage,
        executor: StepExecutor,
        faults: FaultPlan,
        metrics: MetricsSink,
        settings: RunnerSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._queue = queue
        self._clock = clock
        self._outputs = outputs
        self._executor = executor
        self._faults = faults
        self._metrics = metrics
        self._settings = settings
        self._rng = rng or random.Random()

    # -- entry ---------------------------------------------------------------------

    def handle(self, message: Message) -> HandleResult:
        """Process one delivery of ``message``; safe under duplicates and crashes."""
        for _ in range(self._settings.conflict_retries):
            snapshot = self._store.load_run(run_id=message.run_id)
            if snapshot is None:
                log.warning("message for unknown run dropped", extra=_extra(message))
                return HandleResult.ack(f"run {message.run_id} does not exist")
            try:
                return self._dispatch(snapshot, message)
            except ConcurrencyConflict:
                # Lost a race before any user code ran: re-read and decide again.
                continue
        return HandleResult.retry_later(1.0, "state kept changing under this worker")

    def _dispatch(self, snapshot: RunSnapshot, message: Message) -> HandleResult:
        run = snapshot.run
        if StepName(message.step) not in snapshot.steps:
            return HandleResult.ack(f"run {run.run_id} has no step {message.step!r}")
        if run.status.is_terminal:
            return HandleResult.ack(f"run is {run.status}")
        try:
            saga = self._registry.get(run.saga)
        except (UnknownSagaError, ConfigurationError) as exc:
            return self._fail_run(snapshot, f"this worker cannot run saga {run.saga!r}: {exc}")
        if run.definition_hash != saga.definition_hash:
            live = [n for n, r in snapshot.steps.items() if r.status not in _SETTLED]
            missing = planner.unknown_steps(saga, live)
            if missing:
                return self._fail_run(
                    snapshot,
                    f"saga {saga.name!r} changed since this run started and no longer has "
                    f"step(s) {', '.join(missing)}; deploy a version with them and retry the run",
                )
        if message.action is Action.EXECUTE:
            return self._on_execute(saga, snapshot, message)
        if message.action is Action.COMPENSATE:
            return self._on_compensate(saga, snapshot, message)
        # RESUME or TIMEOUT: the deadline of a sleep or an event wait.
        return self._on_wake(saga, snapshot, message)

    # -- execute -------------------------------------------------------------------

    def _on_execute(self, saga: Saga, snapshot: RunSnapshot, message: Message) -> HandleResult:
        run, now = snapshot.run, self._clock.now()
        record = snapshot.step(message.step)
        if not _is_active(run):
            return self._redrive(saga, snapshot, f"run is {run.status}")
        wait = saga.steps[record.name].wait
        if wait is not None and record.status is StepStatus.RUNNING:
            return self._on_wake(saga, snapshot, message)
        not_now = self._why_not_execute(saga, snapshot, record, message, now)
        if not_now is not None:
            return not_now
        definition = saga.steps[record.name]
        if wait is not None:
            return self._begin_wait(saga, snapshot, record, wait)
        error = record.error
        if record.status is StepStatus.RUNNING:
            error = f"attempt {record.attempt} lost its lease (worker crashed or overran)"
        if not has_attempts_left(definition.retry, used=record.attempts_in_budget):
            outcome = AttemptOutcome(is_success=False, error=error, is_retryable=False)
            self._store_change(self._failure_change(saga, snapshot, record, outcome, now))
            return HandleResult.ack("no attempts left; compensating")
        claimed = record.evolve(
            now=now,
            status=StepStatus.RUNNING,
            attempt=record.attempt + 1,
            lease_until=now + definition.timeout_seconds + self._settings.lease_grace_seconds,
            started_at=record.started_at or now,
            retry_at=None,
            error=error,
        )
        new_run = (
            run.evolve(now=now, status=RunStatus.RUNNING)
            if run.status in (RunStatus.PENDING, RunStatus.WAITING)
            else None
        )
        self._store.apply(change=StateChange(run.run_id, run=new_run, steps=(claimed,)))
        snapshot = RunSnapshot(new_run or run, {**snapshot.steps, claimed.name: claimed})
        outcome = self._attempt(
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
                value = to_json_value(outcome.value, step=claimed.name)
                stored = self._outputs.store(run_id=run.run_id, step=claimed.name, value=value)
                outcome = AttemptOutcome(is_success=True, value=stored)
            except (NonRetryableStepError, ConfigurationError) as exc:
                outcome = AttemptOutcome(is_success=False, error=str(exc), is_retryable=False)
        return self._commit(saga, snapshot, claimed, outcome, self._execute_change)

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
                    return self._redrive(saga, snapshot, "stale delivery of a failed attempt")
                return HandleResult.retry_later(record.retry_at - now, "retry not due yet")
            if not all(
                snapshot.step(d).status is StepStatus.SUCCEEDED
                for d in planner.deps_of(saga, snapshot.steps, record.name)
            ):
                return HandleResult.ack("dependencies unfinished; they will enqueue this step")
        elif record.status is not StepStatus.RUNNING:
            return self._redrive(saga, snapshot, f"step already {record.status}")
        return None

    def _execute_change(
        self, saga: Saga, snapshot: RunSnapshot, claimed: StepRecord, outcome: AttemptOutcome
    ) -> StateChange:
        now = self._clock.now()
        if not outcome.is_success:
            return self._failure_change(saga, snapshot, claimed, outcome, now)
        run = snapshot.run
        done = claimed.evolve(
            now=now,
            status=StepStatus.SUCCEEDED,
            output=outcome.value,
            error=None,
            lease_until=None,
            finished_at=now,
        )
        steps = {**snapshot.steps, done.name: done}
        if not _is_active(run):
            # Compensation began meanwhile; it waits for this step and then undoes it.
            return StateChange(run.run_id, steps=(done,))
        ready, checks, is_complete = planner.success_follow_up(saga, steps, done.name)
        new_run = None
        if is_complete:
            new_run = run.evolve(
                now=now, status=RunStatus.COMPLETED, output=self._run_output(saga, run, steps)
            )
        else:
            status = planner.active_status(saga, steps, starting=ready)
            if status is not run.status:
                new_run = run.evolve(now=now, status=status)
        outbox = tuple(
            Message(run.run_id, name, Action.EXECUTE, steps[name].attempt + 1) for name in ready
        )
        return StateChange(
            run.run_id, run=new_run, steps=(done,), checks=tuple(checks), outbox=outbox
        )

    def _run_output(self, saga: Saga, run: RunRecord, steps: dict[StepName, StepRecord]) -> Any:
        """The run's output; a custom builder sees real outputs, references loaded."""
        if saga.output is None:
            return {name: record.output for name, record in steps.items()}
        outputs = self._outputs.outputs_of(RunSnapshot(run, steps))
        return to_json_value(saga.build_output(outputs), step="<run output>")

    def _failure_change(
        self,
        saga: Saga,
        snapshot: RunSnapshot,
        record: StepRecord,
        outcome: AttemptOutcome,
        now: float,
    ) -> StateChange:
        run = snapshot.run
        definition = saga.steps[record.name]
        used = record.attempts_in_budget
        is_running = _is_active(run)
        if is_running and outcome.is_retryable and has_attempts_left(definition.retry, used=used):
            retry_at = now + backoff_delay_seconds(
                definition.retry, failed_attempts=used, rng=self._rng
            )
            pending = record.evolve(
                now=now,
                status=StepStatus.PENDING,
                lease_until=None,
                error=outcome.error,
                retry_at=retry_at,
            )
            retry = Message(run.run_id, record.name, Action.EXECUTE, record.attempt + 1, retry_at)
            return StateChange(run.run_id, steps=(pending,), outbox=(retry,))
        failed = record.evolve(
            now=now,
            status=StepStatus.FAILED,
            lease_until=None,
            error=outcome.error,
            retry_at=None,
            finished_at=now,
        )
        if not is_running:
            return StateChange(run.run_id, steps=(failed,))
        error = f"step {record.name!r} failed after {used} attempt(s): {outcome.error}"
        new_run, changed, outbox = planner.begin_compensation(
            saga, run, {**snapshot.steps, failed.name: failed}, now=now, error=error
        )
        return StateChange(run.run_id, run=new_run, steps=(failed, *changed), outbox=tuple(outbox))

    # -- sleep and wait for an event ----------------------------------------------

    def _begin_wait(
        self, saga: Saga, snapshot: RunSnapshot, record: StepRecord, wait: WaitSpec
    ) -> HandleResult:
        """Park the step until its deadline; an event already received finishes it now.

        The parked step is RUNNING with ``lease_until`` = its deadline, and the same write
        enqueues the wake-up (RESUME for a sleep, TIMEOUT for an event wait) delayed to the
        deadline, so no worker is held and a crash cannot lose the wake-up.
        """
        run, now = snapshot.run, self._clock.now()
        buffered = buffered_event(record.output)
        if buffered is not None:
            # Not a stored write: the attempt and start are recorded by the commit below,
            # which is fenced by the version read here.
            claimed = dataclasses.replace(record, attempt=record.attempt + 1, started_at=now)
            outcome = AttemptOutcome(is_success=True, value=buffered)
            log.info("step consumed an event that arrived early", extra=_record_extra(record))
            return self._commit(saga, snapshot, claimed, outcome, self._execute_change)
        deadline = wait.deadline(now)
        parked = record.evolve(
            now=now,
            status=StepStatus.RUNNING,
            attempt=record.attempt + 1,
            lease_until=deadline,
            started_at=now,
            retry_at=None,
            error=None,
        )
        steps = {**snapshot.steps, parked.name: parked}
        status = planner.active_status(saga, steps, starting=())
        new_run = run.evolve(now=now, status=status) if status is not run.status else None
        wake = planner.wake_message(saga, parked)
        self._store_change(StateChange(run.run_id, run=new_run, steps=(parked,), outbox=(wake,)))
        log.info(
            "step waiting %s",
            "until its wake-up" if wait.is_sleep else f"for an event on {wait.topic}",
            extra={**_record_extra(parked), "until": deadline},
        )
        return HandleResult.ack(f"waiting until {deadline:.3f}")

    def _on_wake(self, saga: Saga, snapshot: RunSnapshot, message: Message) -> HandleResult:
        """A waiting step's deadline message: wake a sleep, time out an event wait."""
        run, now = snapshot.run, self._clock.now()
        record = snapshot.step(message.step)
        definition = saga.steps.get(record.name)
        wait = definition.wait if definition is not None else None
        if wait is None:
            return HandleResult.ack(f"step {record.name!r} does not wait")
        if not _is_active(run):
            return self._redrive(saga, snapshot, f"run is {run.status}")
        if record.status is not StepStatus.RUNNING or message.attempt < record.attempt:
            return self._redrive(saga, snapshot, f"step is {record.status}, not waiting")
        deadline = record.lease_until if record.lease_until is not None else now
        if deadline > now:
            if message.action is Action.EXECUTE:  # a duplicate of the message that parked it
                return self._redrive(saga, snapshot, "step is waiting")
            return HandleResult.retry_later(deadline - now, "wake-up not due yet")
        if wait.is_sleep:
            value = self._outputs.store(run_id=run.run_id, step=record.name, value={"woke_at": now})
            outcome = AttemptOutcome(is_success=True, value=value)
        else:
            outcome = AttemptOutcome(
                is_success=False,
                error=f"no event on {wait.topic!r} arrived within {wait.timeout_seconds:g} s",
                is_retryable=False,
            )
        return self._commit(saga, snapshot, record, outcome, self._execute_change)

    def deliver_event(
        self, *, saga: Saga, run_id: RunId, step: StepDefinition, data: Any
    ) -> str | None:
        """Hand an event's ``data`` to ``step`` of run ``run_id``, if it is waiting for it.

        A waiting step succeeds with ``data`` as output and the run moves on; a step the
        run has not reached yet keeps the event and consumes it when it does (the first
        event wins). Returns what happened, or None when the run does not take the event
        (no such run, another saga, already finished, already received one).
        """
        for _ in range(self._settings.conflict_retries):
            snapshot = self._store.load_run(run_id=run_id)
            if snapshot is None or snapshot.run.saga != saga.name:
                return None
            record = snapshot.steps.get(StepName(step.name))
            if record is None or not _is_active(snapshot.run):
                return None
            try:
                if record.status is StepStatus.RUNNING:
                    value = to_json_value(data, step=record.name)
                    stored = self._outputs.store(run_id=run_id, step=record.name, value=value)
                    outcome = AttemptOutcome(is_success=True, value=stored)
                    result = self._commit(saga, snapshot, record, outcome, self._execute_change)
                    return "resumed" if result.detail == "committed" else None
                if record.status is StepStatus.PENDING and buffered_event(record.output) is None:
                    value = to_json_value(data, step=record.name)
                    stored = self._outputs.store(run_id=run_id, step=record.name, value=value)
                    kept = record.evolve(now=self._clock.now(), output={_BUFFERED: stored})
                    self._store.apply(change=StateChange(run_id, steps=(kept,)))
                    return "kept until the run reaches the step"
            except ConcurrencyConflict:
                continue
            return None
        raise ConcurrencyConflict(run_id=run_id, detail="run kept changing during event delivery")

    # -- compensate ----------------------------------------------------------------

    def _on_compensate(self, saga: Saga, snapshot: RunSnapshot, message: Message) -> HandleResult:
        run, now = snapshot.run, self._clock.now()
        if run.status is not RunStatus.COMPENSATING:
            return HandleResult.ack(f"run is {run.status}; nothing to compensate")
        target = planner.next_compensation_target(saga, snapshot.steps)
        if target is None:
            self._store_change(self._finish_compensation(snapshot, now))
            return HandleResult.ack("compensation finished")
        if target != message.step:
            return self._redrive(saga, snapshot, f"compensation is at step {target!r}")
        record = snapshot.step(target)
        definition = saga.steps[target]
        if record.has_live_lease(now):
            assert record.lease_until is not None
            return HandleResult.retry_later(record.lease_until - now, "step still in progress")
        if record.status is StepStatus.COMPENSATING and record.retry_at and record.retry_at > now:
            if message.attempt <= record.attempt:
                return self._redrive(saga, snapshot, "stale delivery of a failed compensation")
            return HandleResult.retry_later(record.retry_at - now, "retry not due yet")
        if record.status is StepStatus.RUNNING and not definition.compensate_on_failure:
            lost = record.evolve(
                now=now,
                status=StepStatus.FAILED,
                lease_until=None,
                finished_at=now,
                error=f"attempt {record.attempt} lost its lease",
            )
            self._store.apply(change=StateChange(run.run_id, steps=(lost,)))
            return self._redrive(
                saga, RunSnapshot(run, {**snapshot.steps, target: lost}), "moved on"
            )
        compensation = definition.compensation
        assert compensation is not None  # next_compensation_target only picks compensable steps
        budget_start = (
            record.budget_start if record.status is StepStatus.COMPENSATING else record.attempt
        )
        if not has_attempts_left(compensation.retry, used=record.attempt - budget_start):
            outcome = AttemptOutcome(
                is_success=False, error=record.error or "lost its lease", is_retryable=False
            )
            self._store_change(self._compensation_change(saga, snapshot, record, outcome))
            return HandleResult.ack("compensation out of attempts; run FAILED")
        timeout = definition.compensation_timeout_seconds
        claimed = record.evolve(
            now=now,
            status=StepStatus.COMPENSATING,
            attempt=record.attempt + 1,
            budget_start=budget_start,
            lease_until=now + timeout + self._settings.lease_grace_seconds,
            retry_at=None,
        )
        self._store.apply(change=StateChange(run.run_id, steps=(claimed,)))
        snapshot = RunSnapshot(run, {**snapshot.steps, target: claimed})
        outcome = self._attempt(
            saga=saga,
            snapshot=snapshot,
            claimed=claimed,
            action=Action.COMPENSATE,
            fn=compensation.fn,
            timeout_seconds=timeout,
            retry=compensation.retry,
        )
        return self._commit(saga, snapshot, claimed, outcome, self._compensation_change)

    def _compensation_change(
        self, saga: Saga, snapshot: RunSnapshot, claimed: StepRecord, outcome: AttemptOutcome
    ) -> StateChange:
        now = self._clock.now()
        run = snapshot.run
        compensation = saga.steps[claimed.name].compensation
        assert compensation is not None
        if outcome.is_success:
            done = claimed.evolve(
                now=now,
                status=StepStatus.COMPENSATED,
                lease_until=None,
                retry_at=None,
                finished_at=now,
            )
            steps = {**snapshot.steps, done.name: done}
            target = planner.next_compensation_target(saga, steps)
            if target is None:
                finished = self._finish_compensation(RunSnapshot(run, steps), now)
                return StateChange(run.run_id, run=finished.run, steps=(done,))
            return StateChange(
                run.run_id, steps=(done,), outbox=(planner.compensation_message(steps, target),)
            )
        used = claimed.attempt - claimed.budget_start
        if outcome.is_retryable and has_attempts_left(compensation.retry, used=used):
            retry_at = now + backoff_delay_seconds(
                compensation.retry, failed_attempts=used, rng=self._rng
            )
            waiting = claimed.evolve(
                now=now, lease_until=None, error=outcome.error, retry_at=retry_at
            )
            retry = Message(
                run.run_id, claimed.name, Action.COMPENSATE, claimed.attempt + 1, retry_at
            )
            return StateChange(run.run_id, steps=(waiting,), outbox=(retry,))
        error = CompensationFailed(
            run_id=run.run_id,
            step=claimed.name,
            attempt=claimed.attempt,
            reason=outcome.error or "?",
        )
        stuck = claimed.evolve(
            now=now,
            status=StepStatus.COMPENSATING,
            lease_until=None,
            retry_at=None,
            error=f"compensation failed: {outcome.error}",
        )
        log.error(
            "compensation exhausted its retries", extra={"run_id": run.run_id, "step": claimed.name}
        )
        return StateChange(
            run.run_id,
            run=run.evolve(now=now, status=RunStatus.FAILED, error=str(error)),
            steps=(stuck,),
        )

    def _finish_compensation(self, snapshot: RunSnapshot, now: float) -> StateChange:
        run = snapshot.run
        final = RunStatus.CANCELLED if run.is_cancel_requested else RunStatus.COMPENSATED
        return StateChange(run.run_id, run=run.evolve(now=now, status=final))

    # -- shared --------------------------------------------------------------------

    def _attempt(
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
        run = snapshot.run
        started = time.perf_counter()
        names = {"saga": saga.name, "step": claimed.name, "action": action.value}
        delay = self._faults.delay_seconds(**names) if not self._faults.is_empty else 0.0
        if delay:
            time.sleep(delay)
        if not self._faults.is_empty and self._faults.should(FaultKind.FAIL, **names):
            log.warning(
                "RELAY_FAULTS: injected failure",
                extra={"run_id": run.run_id, "attempt": claimed.attempt, **names},
            )
            outcome = AttemptOutcome(
                is_success=False, error=f"{InjectedFault.__name__}: RELAY_FAULTS"
            )
        else:
            own_output = None
            if action is Action.COMPENSATE and claimed.output is not None:
                own_output = self._outputs.resolve(
                    run_id=run.run_id, step=claimed.name, stored=claimed.output
                )
            ctx = StepContext(
                run_id=run.run_id,
                saga=saga.name,
                step=claimed.name,
                action=action,
                attempt=claimed.attempt,
                idempotency_key=f"{run.run_id}:{claimed.name}",
                input=saga.parse_input(run.input),
                outputs=self._outputs.outputs_of(snapshot),
                deadline_at=self._clock.now() + timeout_seconds,
                output=own_output,
                error=run.error if action is Action.COMPENSATE else None,
            )
            outcome = self._executor.run(fn, ctx, timeout_seconds=timeout_seconds, retry=retry)
        if not self._faults.is_empty and self._faults.should(FaultKind.CRASH, **names):
            log.warning(
                "RELAY_FAULTS: crashing worker before commit", extra={"run_id": run.run_id, **names}
            )
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)
        status = (
            "succeeded"
            if outcome.is_success
            else ("failed" if outcome.is_retryable else "rejected")
        )
        self._metrics.record_attempt(
            saga=saga.name,
            step=claimed.name,
            action=action.value,
            outcome=status,
            duration_seconds=time.perf_counter() - started,
        )
        return outcome

    def _commit(
        self,
        saga: Saga,
        snapshot: RunSnapshot,
        claimed: StepRecord,
        outcome: AttemptOutcome,
        build: _ChangeBuilder,
    ) -> HandleResult:
        """Write the attempt's result, fenced by the claim; re-decide on conflicts."""
        for _ in range(self._settings.conflict_retries):
            change = build(saga, snapshot, claimed, outcome)
            try:
                self._store_change(change)
            except ConcurrencyConflict:
                fresh = self._store.load_run(run_id=claimed.run_id)
                if fresh is None or fresh.step(claimed.name).version != claimed.version:
                    log.warning(
                        "claim lost before commit; result discarded",
                        extra={"run_id": claimed.run_id, "step": claimed.name},
                    )
                    return HandleResult.ack("claim lost to a newer attempt; result discarded")
                snapshot = fresh
                continue
            if change.run is not None and change.run.status.is_terminal:
                self._metrics.record_run(saga=saga.name, status=change.run.status.value)
            return HandleResult.ack("committed")
        return HandleResult.retry_later(1.0, "commit kept conflicting")

    def _store_change(self, change: StateChange) -> None:
        self._store.apply(change=change)
        if change.outbox and not self._store.delivers_outbox:
            self._queue.enqueue(messages=change.outbox)

    def _redrive(self, saga: Saga, snapshot: RunSnapshot, reason: str) -> HandleResult:
        """Make sure the messages the current state needs exist, then acknowledge."""
        if snapshot.run.status is RunStatus.COMPENSATING and (
            planner.next_compensation_target(saga, snapshot.steps) is None
        ):
            self._store_change(self._finish_compensation(snapshot, self._clock.now()))
            return HandleResult.ack(f"{reason}; compensation finished")
        messages = planner.expected_messages(saga, snapshot, now=self._clock.now())
        if messages:
            self._queue.enqueue(messages=messages)
        return HandleResult.ack(f"{reason}; re-drove {len(messages)} message(s)")

    def _fail_run(self, snapshot: RunSnapshot, error: str) -> HandleResult:
        run = snapshot.run
        log.error("run failed: %s", error, extra={"run_id": run.run_id})
        self._store.apply(
            change=StateChange(
                run.run_id,
                run=run.evolve(now=self._clock.now(), status=RunStatus.FAILED, error=error),
            )
        )
        return HandleResult.ack(error)


_SETTLED = frozenset({StepStatus.SKIPPED, StepStatus.COMPENSATED})
_ACTIVE_RUN = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING})
_BUFFERED = "$event"
"""Key under which a PENDING event step keeps an event that arrived before the run did."""


def _is_active(run: RunRecord) -> bool:
    """True while the run goes forward (neither compensating, cancelling nor ended)."""
    return run.status in _ACTIVE_RUN and not run.is_cancel_requested


def buffered_event(output: Any) -> Any:
    """The stored event a PENDING step keeps in its output, or None."""
    if isinstance(output, Mapping) and len(output) == 1 and _BUFFERED in output:
        return output[_BUFFERED]
    return None


def _record_extra(record: StepRecord) -> dict[str, object]:
    return {"run_id": record.run_id, "step": record.name, "attempt": record.attempt}


def _extra(message: Message) -> dict[str, object]:
    return {
        "run_id": message.run_id,
        "step": message.step,
        "action": message.action.value,
        "attempt": message.attempt,
    }
