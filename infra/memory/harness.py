"""A ``SagaHarness`` on the in-memory adapters: the quickest way to test a saga.

``core.testing`` imports no adapter (``core`` never does), so this is where the default
backend of the harness lives: a memory state store, a memory queue and a memory I/O
manager, all on one ``FixedClock``::

    from infra.memory.harness import memory_harness

    def test_an_order_completes() -> None:
        with memory_harness([order]) as harness:
            snapshot = harness.run("order", {"customer_id": "c-1", "total_cents": 500})
        assert snapshot.run.status is RunStatus.COMPLETED
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.domain.saga import Saga
from core.engine.saga_runner import RunnerSettings
from core.faults import FaultPlan
from core.ports.clock import FixedClock
from core.ports.metrics import MetricsSink
from core.testing.harness import DEFAULT_SETTINGS, SagaHarness
from infra.memory.io_manager import MemoryIOManager
from infra.memory.state_store import MemoryStateStore
from infra.memory.task_queue import MemoryTaskQueue


def memory_harness(
    sagas: Iterable[Saga[Any]],
    *,
    clock: FixedClock | None = None,
    settings: RunnerSettings = DEFAULT_SETTINGS,
    faults: FaultPlan | None = None,
    metrics: MetricsSink | None = None,
) -> SagaHarness:
    """A harness serving ``sagas`` on fresh in-memory adapters sharing one fixed clock."""
    clock = clock or FixedClock()
    return SagaHarness(
        sagas,
        store=MemoryStateStore(),
        queue=MemoryTaskQueue(clock=clock.now),
        clock=clock,
        io_manager=MemoryIOManager(),
        settings=settings,
        faults=faults,
        metrics=metrics,
    )
