"""The engine of one warm container: the runner and the run service over the same ports."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core.domain.records import Message, RunSnapshot, StepRecord
from core.engine.executor import AttemptExecutor, StepExecutor
from core.engine.outputs import OutputStorage
from core.engine.planner import ordered_names
from core.engine.runs import RunService
from core.engine.saga_runner import HandleResult, RunnerSettings, SagaRunner
from core.engine.sweeper import Sweeper, SweepSettings
from core.engine.triggers import TriggerService
from core.ports.clock import Clock, SystemClock
from core.ports.io_manager import IOManager
from core.ports.metrics import MetricsSink, NullMetrics
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry


@dataclass
class Engine:
    """Everything a function needs to start runs and process step messages.

    Built once per warm container by the composition root (``functions/wiring.py``) and
    shared by every request; it holds no per-request state. ``executor`` runs step
    functions; the composition root passes a ``core.faults.FaultInjectingExecutor``
    around a ``StepExecutor`` when ``RELAY_FAULTS`` is set.
    """

    registry: SagaRegistry
    store: StateStore
    queue: TaskQueue
    io_manager: IOManager | None = None
    clock: Clock = field(default_factory=SystemClock)
    executor: AttemptExecutor = field(default_factory=StepExecutor)
    metrics: MetricsSink = field(default_factory=NullMetrics)
    settings: RunnerSettings = field(default_factory=RunnerSettings)
    sweep_settings: SweepSettings = field(default_factory=SweepSettings)
    rng: random.Random = field(default_factory=random.Random)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outputs = OutputStorage(
            io_manager=self.io_manager,
            inline_limit_bytes=self.settings.inline_output_limit_bytes,
            max_input_bytes=self.settings.max_input_bytes,
        )
        self.runner = SagaRunner(
            registry=self.registry,
            store=self.store,
            queue=self.queue,
            clock=self.clock,
            outputs=self.outputs,
            executor=self.executor,
            metrics=self.metrics,
            settings=self.settings,
            rng=self.rng,
        )
        self.runs = RunService(
            registry=self.registry,
            store=self.store,
            queue=self.queue,
            clock=self.clock,
            outputs=self.outputs,
            conflict_retries=self.settings.conflict_retries,
        )
        self.sweeper = Sweeper(
            registry=self.registry,
            store=self.store,
            queue=self.queue,
            clock=self.clock,
            settings=self.sweep_settings,
            rng=self.rng,
        )
        self.triggers = TriggerService(registry=self.registry, runs=self.runs, runner=self.runner)

    def handle(self, message: Message) -> HandleResult:
        """Process one step message (see ``SagaRunner.handle``)."""
        return self.runner.handle(message)

    def describe(self) -> Mapping[str, object]:
        """Where the engine's ports point, for startup logs and ``relay dev``."""
        return {
            "store": dict(self.store.describe()),
            "queue": dict(self.queue.describe()),
            "io": dict(self.io_manager.describe()) if self.io_manager else None,
            "executor": self.executor.describe(),
            "sagas": self.registry.names(),
        }

    def ordered_steps(self, snapshot: RunSnapshot) -> list[StepRecord]:
        """The run's steps in execution order.

        Stores return steps in their own key order (by name on SQLite, Firestore and
        DynamoDB), so views order them by the saga definition; a saga this process does
        not serve falls back to start time.
        """
        if snapshot.run.saga in self.registry:
            try:
                saga = self.registry.get(snapshot.run.saga)
            except Exception:  # an unimportable saga module must not break read views
                saga = None
            if saga is not None:
                return [snapshot.steps[name] for name in ordered_names(saga, snapshot.steps)]
        return sorted(
            snapshot.steps.values(),
            key=lambda s: (s.started_at is None, s.started_at or 0.0, s.name),
        )

    def close(self) -> None:
        """Release threads held by the executor and the adapters' connections."""
        self.executor.close()
        for close in reversed(self.closers):
            close()
        self.closers.clear()
