"""A deterministic driver for engine tests: memory adapters, a fixed clock, a pump loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from core.domain.records import Message
from core.domain.saga import Saga
from core.engine.engine import Engine
from core.engine.executor import StepExecutor
from core.engine.saga_runner import HandleResult, RunnerSettings
from core.faults import FaultInjectingExecutor, FaultPlan
from core.ports.clock import FixedClock
from core.ports.task_queue import Delivery
from core.registry import SagaRegistry
from infra.memory.io_manager import MemoryIOManager
from infra.memory.state_store import MemoryStateStore
from infra.memory.task_queue import MemoryTaskQueue


@dataclass
class Harness:
    """Runs sagas on the memory backend, one delivery at a time, with a fixed clock."""

    sagas: list[Saga]
    faults: FaultPlan = field(default_factory=FaultPlan)
    settings: RunnerSettings = field(
        default_factory=lambda: RunnerSettings(lease_grace_seconds=1.0)
    )

    def __post_init__(self) -> None:
        self.clock = FixedClock()
        self.store = MemoryStateStore()
        self.queue = MemoryTaskQueue(clock=self.clock.now)
        self.registry = SagaRegistry()
        for saga in self.sagas:
            self.registry.register(saga)
        self.engine = Engine(
            registry=self.registry,
            store=self.store,
            queue=self.queue,
            io_manager=MemoryIOManager(),
            clock=self.clock,
            executor=(
                FaultInjectingExecutor(StepExecutor(), self.faults)
                if not self.faults.is_empty
                else StepExecutor()
            ),
            settings=self.settings,
            rng=random.Random(7),
        )
        self.handled: list[tuple[Message, HandleResult]] = []

    def deliver(self, message: Message) -> HandleResult:
        """Hand one message to the engine directly (a duplicate or crafted delivery)."""
        result = self.engine.handle(message)
        self.handled.append((message, result))
        return result

    def drain(self) -> int:
        """Deliver every message due now, without moving the clock; returns how many."""
        delivered = 0
        while batch := self.queue.lease_due(now=self.clock.now(), limit=10, lease_seconds=60.0):
            delivered += self._deliver_batch(batch)
        return delivered

    def pump(self, *, max_deliveries: int = 1000, advance_seconds: float = 0.5) -> int:
        """Deliver due messages until the queue is empty, moving the clock when idle."""
        delivered = 0
        idle_rounds = 0
        while delivered < max_deliveries:
            batch = self.queue.lease_due(now=self.clock.now(), limit=10, lease_seconds=60.0)
            if not batch:
                if self.queue.pending_count() == 0:
                    return delivered
                idle_rounds += 1
                if idle_rounds > 100_000:
                    raise AssertionError("queue never became due")
                self.clock.advance(advance_seconds)
                continue
            idle_rounds = 0
            delivered += self._deliver_batch(batch)
        raise AssertionError(f"still busy after {max_deliveries} deliveries")

    def _deliver_batch(self, batch: list[Delivery]) -> int:
        for item in batch:
            result = self.deliver(item.message)
            if result.is_done:
                self.queue.ack(receipts=[item.receipt])
            else:
                self.queue.release(receipt=item.receipt, delay_seconds=result.retry_after_seconds)
        return len(batch)

    def close(self) -> None:
        self.engine.close()
