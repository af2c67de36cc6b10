"""The worker side of the step protocol: one queue message in, one outcome out.

Load → (re-drive if finished) → claim with a lease → execute with a timeout → commit
fenced by the claim → enqueue what became ready (DESIGN.md, "The step protocol").
Correctness never depends on the queue: every branch is safe to run twice. The runner
loads the run and dispatches by action to the paths of this package: ``execute``,
``compensate`` and ``waits`` (sleeps and event waits), which share ``shared`` (attempt,
commit, re-drive) and ``forward`` (the writes that move a step forward).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from core.domain.records import Message, RunId, RunSnapshot, StepName
from core.domain.saga import Saga, StepDefinition
from core.domain.status import Action, StepStatus
from core.engine import planner
from core.engine.executor import AttemptExecutor
from core.engine.outputs import OutputStorage
from core.engine.saga_runner.compensate import CompensatePath
from core.engine.saga_runner.execute import ExecutePath
from core.engine.saga_runner.forward import ForwardChanges
from core.engine.saga_runner.results import HandleResult, Outcome, RunnerSettings
from core.engine.saga_runner.shared import RunnerPorts, SharedSteps, message_extra
from core.engine.saga_runner.waits import WaitPath
from core.errors import ConcurrencyConflict, ConfigurationError, UnknownSagaError
from core.ports.clock import Clock
from core.ports.metrics import MetricsSink
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry

log = logging.getLogger("relay.engine")

_SETTLED = frozenset({StepStatus.SKIPPED, StepStatus.COMPENSATED})


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
        executor: AttemptExecutor,
        metrics: MetricsSink,
        settings: RunnerSettings,
        rng: random.Random | None = None,
    ) -> None:
        ports = RunnerPorts(
            registry=registry,
            store=store,
            queue=queue,
            clock=clock,
            outputs=outputs,
            executor=executor,
            metrics=metrics,
            settings=settings,
            rng=rng or random.Random(),
        )
        self._ports = ports
        self._shared = SharedSteps(ports)
        forward = ForwardChanges(self._shared)
        self._waits = WaitPath(self._shared, forward)
        self._execute = ExecutePath(self._shared, forward, self._waits)
        self._compensate = CompensatePath(self._shared)

    def handle(self, message: Message) -> HandleResult:
        """Process one delivery of ``message``; safe under duplicates and crashes."""
        for _ in range(self._ports.settings.conflict_retries):
            snapshot = self._ports.store.load_run(run_id=message.run_id)
            if snapshot is None:
                log.warning("message for unknown run dropped", extra=message_extra(message))
                return HandleResult.ack(Outcome.DROPPED, f"run {message.run_id} does not exist")
            try:
                return self._dispatch(snapshot, message)
            except ConcurrencyConflict:
                # Lost a race before any user code ran: re-read and decide again.
                continue
        return HandleResult.retry_later(1.0, "state kept changing under this worker")

    def deliver_event(
        self, *, saga: Saga, run_id: RunId, step: StepDefinition, data: Any
    ) -> str | None:
        """Hand an event's ``data`` to a waiting step (see ``WaitPath.deliver_event``)."""
        return self._waits.deliver_event(saga=saga, run_id=run_id, step=step, data=data)

    def _dispatch(self, snapshot: RunSnapshot, message: Message) -> HandleResult:
        run = snapshot.run
        if message.saga is not None and message.saga != run.saga:
            # Run ids are unique across sagas, so this message was not written by Relay.
            log.warning("message names another saga than its run", extra=message_extra(message))
            return HandleResult.ack(
                Outcome.DROPPED, f"message names saga {message.saga!r}, run is of {run.saga!r}"
            )
        if StepName(message.step) not in snapshot.steps:
            return HandleResult.ack(
                Outcome.DROPPED, f"run {run.run_id} has no step {message.step!r}"
            )
        if run.status.is_terminal:
            # A redelivery after a crash between the final commit and the retention mark.
            try:
                streaming = self._ports.registry.get(run.saga).streaming_steps
            except (UnknownSagaError, ConfigurationError):
                streaming = frozenset()  # not served here: marks what the records show
            self._ports.outputs.on_run_ended(run, snapshot.steps.values(), streaming=streaming)
            return HandleResult.ack(Outcome.DROPPED, f"run is {run.status}")
        try:
            saga = self._ports.registry.get(run.saga)
        except (UnknownSagaError, ConfigurationError) as exc:
            return self._shared.fail_run(
                snapshot, f"this worker cannot run saga {run.saga!r}: {exc}"
            )
        if run.definition_hash != saga.definition_hash:
            live = [n for n, r in snapshot.steps.items() if r.status not in _SETTLED]
            missing = planner.unknown_steps(saga, live)
            if missing:
                return self._shared.fail_run(
                    snapshot,
                    f"saga {saga.name!r} changed since this run started and no longer has "
                    f"step(s) {', '.join(missing)}; deploy a version with them and retry the run",
                )
        if message.action is Action.EXECUTE:
            return self._execute.on_execute(saga, snapshot, message)
        if message.action is Action.COMPENSATE:
            return self._compensate.on_compensate(saga, snapshot, message)
        # RESUME or TIMEOUT: the deadline of a sleep or an event wait.
        return self._waits.on_wake(saga, snapshot, message)
