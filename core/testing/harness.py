"""``SagaHarness``: the real engine over ports you choose, driven one delivery at a time.

The harness replaces the two things that make a saga hard to test, the queue's timing and
the wall clock, and nothing else: runs go through the same step protocol (load, claim,
execute, commit, enqueue) as in production, against a real ``StateStore``, with a
``FixedClock`` that moves only when the test (or an idle ``pump``) moves it. So a test
can finish a run in milliseconds that sleeps for an hour, deliver a message twice, lose a
worker mid-step, or let a lease run out.

``core`` imports no adapter, so the harness takes its ports as arguments. The in-memory
ones are one call away (``infra/memory/harness.py``)::

    >>> from pydantic import BaseModel
    >>> from core import Saga, StepContext
    >>> from infra.memory.harness import memory_harness
    >>> class Greeting(BaseModel):
    ...     name: str
    >>> greet = Saga("greet", input_model=Greeting)
    >>> @greet.step
    ... def hello(ctx: StepContext[Greeting]) -> str:
    ...     return f"hello {ctx.input.name}"
    >>> with memory_harness([greet]) as harness:
    ...     snapshot = harness.run("greet", {"name": "ada"})
    ...     # every message again: a duplicate delivery is acknowledged and changes nothing
    ...     replayed = [harness.deliver(m).is_done for m, _ in harness.handled]
    ...     unchanged = harness.snapshot(snapshot.run.run_id) == snapshot
    >>> snapshot.run.status.value, snapshot.run.output, replayed, unchanged
    ('COMPLETED', {'hello': 'hello ada'}, [True], True)

To run the same test on another backend, build the harness with that backend's store and
a queue on the same clock: the SQLite store with the SQLite queue it delivers its outbox
to, a cloud store (Firestore, DynamoDB) with the memory queue. Relay's own engine suite
(``tests/engine``) runs every protocol test that way on every backend.

Every time the engine and the ports compare must come from the harness's one clock: give
the queue (and a store that stamps times, such as SQLite's) ``clock=harness_clock.now``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NoReturn

from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus
from core.engine.engine import Engine
from core.engine.executor import AttemptExecutor, StepExecutor
from core.engine.runs import StartResult
from core.engine.saga_runner import HandleResult, RunnerSettings
from core.engine.triggers import EventOutcome
from core.faults import FaultInjectingExecutor, FaultPlan
from core.ports.clock import FixedClock
from core.ports.io_manager import IOManager
from core.ports.metrics import MetricsSink, NullMetrics
from core.ports.state_store import StateStore
from core.ports.task_queue import Delivery, PullQueue
from core.registry import SagaRegistry

DEFAULT_SETTINGS = RunnerSettings(lease_grace_seconds=1.0)
"""A short lease grace, so tests that lose a worker need not move the clock far."""


class SimulatedCrash(BaseException):
    """Raised out of ``deliver`` where a ``crash`` fault would end a worker process.

    The step function ran and its result is not committed, exactly where a real crash
    leaves things. A ``BaseException``, so no engine code catches it on the way out;
    deliver the message again (or let a lease run out) to watch the run recover.
    """


def raise_simulated_crash() -> NoReturn:
    """The harness's ``crash``: end the delivery instead of the test process."""
    raise SimulatedCrash


class SagaHarness:
    """Runs sagas on the given ports, one delivery at a time, with a clock the test moves.

    Args:
        sagas: The sagas to serve (registered and frozen, as a worker would).
        store: The state store under test.
        queue: A pull queue whose clock is ``clock`` (the one the store delivers its
            outbox to, when the store does).
        clock: The one clock of the test; ``advance`` and an idle ``pump`` move it.
        io_manager: Where outputs and run inputs over the inline limit go; without one
            a large output is refused and a large input stays inline.
        settings: Protocol tunables; by default a 1 s lease grace.
        faults: Injected faults (``RELAY_FAULTS`` rules), none by default.
        metrics: Where the engine's metrics go; dropped by default.
        crash: What a ``crash`` fault does; by default it raises ``SimulatedCrash`` out of
            the delivery (``core.faults.crash_process`` ends the process, as a worker).
        seed: Seeds the retry jitter, so backoff delays repeat from run to run.
        lease_seconds: How long a leased message stays hidden while it is handled.

    Attributes:
        engine: The engine under test (``engine.runs``, ``engine.triggers``).
    """

    def __init__(
        self,
        sagas: Iterable[Saga[Any]],
        *,
        store: StateStore,
        queue: PullQueue,
        clock: FixedClock,
        io_manager: IOManager | None = None,
        settings: RunnerSettings = DEFAULT_SETTINGS,
        faults: FaultPlan | None = None,
        metrics: MetricsSink | None = None,
        crash: Callable[[], NoReturn] = raise_simulated_crash,
        seed: int = 7,
        lease_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.io_manager = io_manager
        self.settings = settings
        self.faults = faults or FaultPlan()
        self.metrics = metrics or NullMetrics()
        self.crash = crash
        self.seed = seed
        self.lease_seconds = lease_seconds
        self.registry = SagaRegistry()
        for saga in sagas:
            self.registry.register(saga)
        self.engine = self._build_engine(self.registry)
        self._handled: list[tuple[Message, HandleResult]] = []

    @property
    def handled(self) -> tuple[tuple[Message, HandleResult], ...]:
        """Every delivery so far with its outcome, oldest first.

        A copy, so a test can replay them (the quickest duplicate-delivery test) while
        the replays are recorded.
        """
        return tuple(self._handled)

    def _build_engine(self, registry: SagaRegistry) -> Engine:
        # The one place the harness builds an engine.
        executor: AttemptExecutor = StepExecutor()
        if not self.faults.is_empty:
            executor = FaultInjectingExecutor(executor, self.faults, crash=self.crash)
        return Engine(
            registry=registry,
            store=self.store,
            queue=self.queue,
            io_manager=self.io_manager,
            clock=self.clock,
            executor=executor,
            metrics=self.metrics,
            settings=self.settings,
            rng=random.Random(self.seed),
        )

    # -- runs ------------------------------------------------------------------------

    def start(self, saga: str, input: object, *, idempotency_key: str | None = None) -> StartResult:
        """Start a run (nothing is delivered yet); the same key returns the same run.

        Raises:
            InputValidationError, UnknownSagaError, IdempotencyKeyReusedError: as the
                run API does; nothing is written.
        """
        return self.engine.runs.start(saga, input, idempotency_key=idempotency_key)

    def run(self, saga: str, input: object, *, idempotency_key: str | None = None) -> RunSnapshot:
        """Start a run, ``pump`` until nothing is left to deliver, and return the run."""
        run_id = self.start(saga, input, idempotency_key=idempotency_key).run.run_id
        self.pump()
        return self.snapshot(run_id)

    def snapshot(self, run_id: str) -> RunSnapshot:
        """The run with its steps, as stored now.

        Raises:
            RunNotFoundError: no run has this id.
        """
        return self.engine.runs.get(run_id)

    def publish(self, topic: str, data: object, *, event_id: str) -> EventOutcome:
        """Publish an event: start subscribed sagas, resume runs waiting for it."""
        return self.engine.triggers.publish(topic=topic, data=data, event_id=event_id)

    def sweep(self, *, stale_after_seconds: float) -> int:
        """Run the sweeper once; returns how many runs it re-drove.

        ``engine.sweeper.sweep`` gives the whole report (messages sent, runs loaded,
        runs still backing off).
        """
        return self.engine.sweeper.sweep(stale_after_seconds=stale_after_seconds).redriven

    # -- deliveries ------------------------------------------------------------------

    def message(
        self,
        run_id: str,
        step: str,
        *,
        action: Action = Action.EXECUTE,
        attempt: int = 1,
        saga: str | None = None,
    ) -> Message:
        """A hand-made message for ``step`` of ``run_id``: a crafted or duplicate delivery.

        It names the run's saga, as the engine's own messages do; pass ``saga`` to craft
        one that names another (the worker drops it).
        """
        if saga is None:
            found = self.store.load_run(run_id=RunId(run_id))
            saga = found.run.saga if found is not None else None
        return Message(RunId(run_id), StepName(step), action, attempt, saga=saga)

    def deliver(self, message: Message) -> HandleResult:
        """Hand one message to the engine directly, bypassing the queue."""
        result = self.engine.handle(message)
        self._handled.append((message, result))
        return result

    def deliver_due(self, limit: int = 1) -> list[HandleResult]:
        """Deliver up to ``limit`` messages due now, oldest first, as a worker would.

        A message that is done is acknowledged; one the engine asks to see again is
        released with the delay it asked for.
        """
        return [
            self._settle(item)
            for item in self.queue.lease_due(
                now=self.clock.now(), limit=limit, lease_seconds=self.lease_seconds
            )
        ]

    def drain(self) -> int:
        """Deliver every message due now, without moving the clock; returns how many."""
        delivered = 0
        while results := self.deliver_due(limit=10):
            delivered += len(results)
        return delivered

    def pump(
        self,
        *,
        max_deliveries: int = 1000,
        advance_seconds: float = 0.5,
        max_idle_seconds: float = 86_400.0,
    ) -> int:
        """Deliver until the queue is empty, moving the clock while nothing is due.

        While messages are queued but none is due (a backoff, a lease, a sleep), the
        clock moves ``advance_seconds`` at a time, so a message is delivered at most that
        late. For a wait longer than ``max_idle_seconds`` (a week-long sleep), ``advance``
        past it first; stepping through it would take millions of rounds.

        Returns:
            How many messages were delivered.

        Raises:
            AssertionError: still busy after ``max_deliveries`` (a run that never ends),
                or nothing became due within ``max_idle_seconds`` of simulated time.
        """
        delivered = 0
        idle_since = self.clock.now()
        while delivered < max_deliveries:
            results = self.deliver_due(limit=10)
            if results:
                idle_since = self.clock.now()
                delivered += len(results)
                continue
            if self.queue.pending_count() == 0:
                return delivered
            if self.clock.now() - idle_since >= max_idle_seconds:
                raise AssertionError(
                    f"{self.queue.pending_count()} message(s) queued, none due within "
                    f"{max_idle_seconds:g} s of simulated time: advance() the clock past long "
                    "waits before pumping"
                )
            self.clock.advance(advance_seconds)
        raise AssertionError(f"still busy after {max_deliveries} deliveries")

    def advance(self, seconds: float) -> None:
        """Move the clock forward: backoffs, sleeps, event timeouts and leases run out."""
        self.clock.advance(seconds)

    def _settle(self, item: Delivery) -> HandleResult:
        result = self.deliver(item.message)
        if result.is_done:
            self.queue.ack(receipts=[item.receipt])
        else:
            self.queue.release(receipt=item.receipt, delay_seconds=result.retry_after_seconds)
        return result

    # -- failures --------------------------------------------------------------------

    def abandon_claim(
        self,
        run_id: str,
        step: str,
        *,
        claims: int = 1,
        action: Action = Action.EXECUTE,
        lease_seconds: float = 1.0,
    ) -> StepRecord:
        """Leave ``step`` as ``claims`` workers that claimed it in turn and died would.

        Each claim used an attempt (so crashes count against the retry budget); the last
        one's lease runs out ``lease_seconds`` from now. Nothing is enqueued: the step's
        own queued message, the queue's redelivery or the sweeper must find it, which is
        what the test is about. ``action=Action.COMPENSATE`` loses the step's compensation
        instead.

        Returns:
            The stored record.
        """
        snapshot = self.snapshot(run_id)
        run, record = snapshot.run, snapshot.step(step)
        now = self.clock.now()
        for _ in range(claims):  # one conditional write per claim, as workers make them
            new_run: RunRecord | None = None
            if action is Action.COMPENSATE:
                record = record.compensation_claimed(now=now, lease_until=now + lease_seconds)
            else:
                record = record.claimed(now=now, lease_until=now + lease_seconds, error=None)
                if run.status in (RunStatus.PENDING, RunStatus.WAITING):
                    new_run = run = run.running(now=now)
            self.store.apply(change=StateChange(record.run_id, run=new_run, steps=(record,)))
        return record

    # -- versions and lifetime -------------------------------------------------------

    def worker(self, sagas: Iterable[Saga[Any]]) -> SagaHarness:
        """Another worker on the same store, queue and clock, serving ``sagas``.

        A redeployment in a test: runs started under one definition, handled by a worker
        that has another. Close it separately; it shares (and never closes) the ports.
        """
        return SagaHarness(
            sagas,
            store=self.store,
            queue=self.queue,
            clock=self.clock,
            io_manager=self.io_manager,
            settings=self.settings,
            faults=self.faults,
            metrics=self.metrics,
            crash=self.crash,
            seed=self.seed,
            lease_seconds=self.lease_seconds,
        )

    def close(self) -> None:
        """Stop the engine's step threads; the ports belong to whoever made them."""
        self.engine.close()

    def __enter__(self) -> SagaHarness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
