"""Durable sleeps and event waits: park a step, wake it at its deadline, hand it an event.

A parked step is RUNNING with ``lease_until`` = its deadline and no worker; the write
that parks it also enqueues its wake-up (RESUME for a sleep, TIMEOUT for an event wait)
delayed to the deadline, so no worker is held and a crash cannot lose the wake-up. An
event that arrives before the run reaches its wait is kept in the PENDING step's output
until it does (the first event wins).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from core.domain.records import Message, RunId, RunSnapshot, StateChange, StepName, StepRecord
from core.domain.saga import Saga, StepDefinition, WaitSpec
from core.domain.status import Action, StepStatus
from core.engine import planner
from core.engine.executor import AttemptOutcome
from core.engine.outputs import to_json_value
from core.engine.saga_runner.forward import ForwardChanges
from core.engine.saga_runner.results import HandleResult, Outcome
from core.engine.saga_runner.shared import (
    SharedSteps,
    is_active,
    record_extra,
    with_active_status,
)
from core.errors import ConcurrencyConflict

log = logging.getLogger("relay.engine")

_BUFFERED = "$event"
"""Key under which a PENDING event step keeps an event that arrived before the run did."""


def buffered_event(output: Any) -> Any:
    """The stored event a PENDING step keeps in its output, or None."""
    if isinstance(output, Mapping) and len(output) == 1 and _BUFFERED in output:
        return output[_BUFFERED]
    return None


class WaitPath:
    """Sleeps and event waits of the step protocol."""

    def __init__(self, shared: SharedSteps, forward: ForwardChanges) -> None:
        self._shared = shared
        self._forward = forward

    def begin_wait(
        self, saga: Saga, snapshot: RunSnapshot, record: StepRecord, wait: WaitSpec
    ) -> HandleResult:
        """Park the step until its deadline; an event already received finishes it now."""
        shared = self._shared
        run, now = snapshot.run, shared.now()
        buffered = buffered_event(record.output)
        if buffered is not None:
            outcome = AttemptOutcome(is_success=True, value=buffered)
            log.info("step consumed an event that arrived early", extra=record_extra(record))
            return shared.commit(saga, snapshot, record, outcome, self._forward.event_change)
        deadline = wait.deadline(now)
        parked = record.parked(now=now, until=deadline)
        steps = {**snapshot.steps, parked.name: parked}
        status = planner.active_status(saga, steps, starting=())
        new_run = with_active_status(run, status, now=now)
        wake = planner.wake_message(saga, parked)
        shared.store_change(StateChange(run.run_id, run=new_run, steps=(parked,), outbox=(wake,)))
        log.info(
            "step waiting %s",
            "until its wake-up" if wait.is_sleep else f"for an event on {wait.topic}",
            extra={**record_extra(parked), "until": deadline},
        )
        return HandleResult.ack(Outcome.PARKED, f"waiting until {deadline:.3f}")

    def on_wake(self, saga: Saga, snapshot: RunSnapshot, message: Message) -> HandleResult:
        """A waiting step's deadline message: wake a sleep, time out an event wait."""
        shared = self._shared
        run, now = snapshot.run, shared.now()
        record = snapshot.step(message.step)
        definition = saga.steps.get(record.name)
        wait = definition.wait if definition is not None else None
        if wait is None:
            return HandleResult.ack(Outcome.DROPPED, f"step {record.name!r} does not wait")
        if not is_active(run):
            return shared.redrive(saga, snapshot, f"run is {run.status}")
        if record.status is not StepStatus.RUNNING or message.attempt < record.attempt:
            return shared.redrive(saga, snapshot, f"step is {record.status}, not waiting")
        deadline = record.lease_until if record.lease_until is not None else now
        if deadline > now:
            if message.action is Action.EXECUTE:  # a duplicate of the message that parked it
                return shared.redrive(saga, snapshot, "step is waiting")
            return HandleResult.retry_later(deadline - now, "wake-up not due yet")
        if wait.is_sleep:
            outputs = shared.ports.outputs
            value = outputs.store(run_id=run.run_id, step=record.name, value={"woke_at": now})
            outcome = AttemptOutcome(is_success=True, value=value)
        else:
            outcome = AttemptOutcome(
                is_success=False,
                error=f"no event on {wait.topic!r} arrived within {wait.timeout_seconds:g} s",
                is_retryable=False,
            )
        return shared.commit(saga, snapshot, record, outcome, self._forward.execute_change)

    def deliver_event(
        self, *, saga: Saga, run_id: RunId, step: StepDefinition, data: Any
    ) -> str | None:
        """Hand an event's ``data`` to ``step`` of run ``run_id``, if it is waiting for it.

        A waiting step succeeds with ``data`` as output and the run moves on; a step the
        run has not reached yet keeps the event and consumes it when it does (the first
        event wins). Returns what happened, or None when the run does not take the event
        (no such run, another saga, already finished, already received one).
        """
        shared = self._shared
        store, outputs = shared.ports.store, shared.ports.outputs
        for _ in range(shared.ports.settings.conflict_retries):
            snapshot = store.load_run(run_id=run_id)
            if snapshot is None or snapshot.run.saga != saga.name:
                return None
            record = snapshot.steps.get(StepName(step.name))
            if record is None or not is_active(snapshot.run):
                return None
            try:
                if record.status is StepStatus.RUNNING:
                    value = to_json_value(data, step=record.name)
                    stored = outputs.store(run_id=run_id, step=record.name, value=value)
                    outcome = AttemptOutcome(is_success=True, value=stored)
                    result = shared.commit(
                        saga, snapshot, record, outcome, self._forward.execute_change
                    )
                    return "resumed" if result.outcome is Outcome.COMMITTED else None
                if record.status is StepStatus.PENDING and buffered_event(record.output) is None:
                    value = to_json_value(data, step=record.name)
                    stored = outputs.store(run_id=run_id, step=record.name, value=value)
                    kept = record.event_buffered(now=shared.now(), output={_BUFFERED: stored})
                    store.apply(change=StateChange(run_id, steps=(kept,)))
                    return "kept until the run reaches the step"
            except ConcurrencyConflict:
                continue
            return None
        raise ConcurrencyConflict(run_id=run_id, detail="run kept changing during event delivery")
