"""The local dispatcher delivering real SQLite queue messages in-process and over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.domain.context import StepContext
from core.domain.records import Message
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from core.domain.status import RunStatus, StepStatus
from core.engine.engine import Engine
from core.engine.saga_runner import RunnerSettings
from core.faults import FaultPlan
from core.registry import SagaRegistry
from core.signing import SIGNATURE_HEADER, SignatureError, verify
from infra.local.runtime.delivery import HttpDelivery, InProcessDelivery, backoff_seconds
from infra.local.runtime.dispatcher import Dispatcher
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore

KEY = b"test-signing-key"
STEPS = ("reserve", "charge", "ship")


@dataclass
class CallLog:
    """How often each step function ran, per run."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ctx: StepContext) -> dict[str, object]:
        with self.lock:
            self.calls[(ctx.run_id, ctx.step)] += 1
        return {"step": ctx.step, "attempt": ctx.attempt}


def three_step_saga(calls: CallLog, *, max_attempts: int = 3) -> Saga:
    saga = Saga("trio")
    retry = RetryPolicy(max_attempts=max_attempts, initial_delay_seconds=0.05)
    for name in STEPS:
        saga.step(calls.record, name=name, retry=retry, timeout_seconds=5)
    return saga


@dataclass
class SQLiteStack:
    """Real SQLite adapters and an engine over them, as one test uses them."""

    database: SQLiteDatabase
    queue: SQLiteTaskQueue
    engine: Engine
    calls: CallLog

    def start_runs(self, count: int) -> list[str]:
        return [self.engine.runs.start("trio", {"n": i}).run.run_id for i in range(count)]

    def statuses(self, run_ids: list[str]) -> Counter[RunStatus]:
        return Counter(self.engine.runs.get(run_id).run.status for run_id in run_ids)


def build_stack(tmp_path: Path, *, max_attempts: int = 3) -> SQLiteStack:
    database = SQLiteDatabase(tmp_path / "relay.db")
    calls = CallLog()
    registry = SagaRegistry()
    registry.register(three_step_saga(calls, max_attempts=max_attempts))
    engine = Engine(
        registry=registry,
        store=SQLiteStateStore(database),
        queue=SQLiteTaskQueue(database),
        settings=RunnerSettings(lease_grace_seconds=1.0),
    )
    return SQLiteStack(database, SQLiteTaskQueue(database), engine, calls)


@pytest.fixture
def sqlite_stack(tmp_path: Path) -> Iterator[SQLiteStack]:
    """Adapters on a fresh SQLite file, closed after the test."""
    stack = build_stack(tmp_path)
    yield stack
    stack.engine.close()
    stack.database.close()


def run_dispatcher(dispatcher: Dispatcher, *, timeout_seconds: float = 60.0) -> None:
    async def drain() -> None:
        async with dispatcher:
            await dispatcher.run_until_idle(timeout_seconds=timeout_seconds)

    asyncio.run(drain())


# --- an HTTP worker in a thread --------------------------------------------------------

Behaviour = Callable[[Message], Response | None]
"""Lets a test answer a delivery itself; None hands it to the engine."""


def worker_app(engine: Engine, *, behaviour: Behaviour | None = None) -> Starlette:
    """A minimal ``POST /v1/steps`` worker: verify the HMAC, parse, call engine.handle."""

    async def steps(request: Request) -> Response:
        body = await request.body()
        try:
            verify(
                request.headers.get(SIGNATURE_HEADER),
                method=request.method,
                path=request.url.path,
                body=body,
                key=KEY,
            )
        except SignatureError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        try:
            message = Message.from_json(json.loads(body))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if behaviour is not None:
            answer = behaviour(message)
            if answer is not None:
                return answer
        result = await run_in_threadpool(engine.handle, message)
        if result.is_done:
            return JSONResponse({"detail": result.detail})
        return retry_later(result.retry_after_seconds)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/v1/steps", steps, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def retry_later(seconds: float) -> Response:
    return JSONResponse(
        {"retry_after_seconds": seconds},
        status_code=503,
        headers={"Retry-After": str(math.ceil(seconds))},
    )


class ThreadedServer:
    """Uvicorn serving an app on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: Starlette) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/steps"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "test worker did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/steps"


# --- tests ------------------------------------------------------------------------------


def test_in_process_delivery_completes_every_run(sqlite_stack: SQLiteStack) -> None:
    """Fifty three-step runs delivered in-process all end COMPLETED, each step run once."""
    run_ids = sqlite_stack.start_runs(50)
    dispatcher = Dispatcher(sqlite_stack.queue, InProcessDelivery(sqlite_stack.engine))

    run_dispatcher(dispatcher)

    assert sqlite_stack.statuses(run_ids) == {RunStatus.COMPLETED: 50}
    assert set(sqlite_stack.calls.calls.values()) == {1}
    assert len(sqlite_stack.calls.calls) == 150
    assert sqlite_stack.queue.pending_count() == 0
    stats = dispatcher.stats
    assert stats.delivered == stats.acked == 150
    assert stats.errors == stats.released == stats.in_flight == 0


def test_http_delivery_completes_runs_through_a_signed_worker(sqlite_stack: SQLiteStack) -> None:
    """Deliveries POSTed with an HMAC signature to a worker app complete every run."""
    run_ids = sqlite_stack.start_runs(10)
    with ThreadedServer(worker_app(sqlite_stack.engine)) as worker:
        dispatcher = Dispatcher(sqlite_stack.queue, HttpDelivery([worker.url], KEY))
        run_dispatcher(dispatcher)

    assert sqlite_stack.statuses(run_ids) == {RunStatus.COMPLETED: 10}
    assert dispatcher.stats.acked == 30
    assert dispatcher.stats.errors == 0


def test_http_delivery_with_a_wrong_key_is_retried_not_dropped(sqlite_stack: SQLiteStack) -> None:
    """A 401 from a worker (keys disagree) releases the message for a later retry."""
    sqlite_stack.start_runs(1)
    with ThreadedServer(worker_app(sqlite_stack.engine)) as worker:
        dispatcher = Dispatcher(sqlite_stack.queue, HttpDelivery([worker.url], b"wrong-key"))

        async def deliver_for_a_while() -> None:
            async with dispatcher:
                await dispatcher.start()
                await asyncio.sleep(0.5)

        asyncio.run(deliver_for_a_while())

    assert dispatcher.stats.errors >= 2
    assert dispatcher.stats.acked == 0
    assert sqlite_stack.queue.pending_count() == 1


def test_retry_after_from_a_503_is_honoured(sqlite_stack: SQLiteStack) -> None:
    """A 503 with a retry delay releases the message and redelivers it after that delay."""
    run_ids = sqlite_stack.start_runs(3)
    seen: dict[str, list[float]] = defaultdict(list)

    def first_delivery_busy(message: Message) -> Response | None:
        seen[message.message_id].append(time.monotonic())
        return retry_later(0.3) if len(seen[message.message_id]) == 1 else None

    with ThreadedServer(worker_app(sqlite_stack.engine, behaviour=first_delivery_busy)) as worker:
        dispatcher = Dispatcher(sqlite_stack.queue, HttpDelivery([worker.url], KEY))
        run_dispatcher(dispatcher)

    assert sqlite_stack.statuses(run_ids) == {RunStatus.COMPLETED: 3}
    assert len(seen) == 9
    for times in seen.values():
        assert len(times) == 2
        assert times[1] - times[0] >= 0.25
    assert dispatcher.stats.released == 9
    assert dispatcher.stats.errors == 0


def test_a_400_drops_the_message(sqlite_stack: SQLiteStack) -> None:
    """A message the worker calls malformed (400) is acknowledged once, not redelivered."""
    run_ids = sqlite_stack.start_runs(4)
    rejected: list[str] = []

    def reject_charge(message: Message) -> Response | None:
        if message.step != "charge":
            return None
        rejected.append(message.message_id)
        return JSONResponse({"error": "malformed"}, status_code=400)

    with ThreadedServer(worker_app(sqlite_stack.engine, behaviour=reject_charge)) as worker:
        dispatcher = Dispatcher(sqlite_stack.queue, HttpDelivery([worker.url], KEY))
        run_dispatcher(dispatcher)

    assert len(rejected) == len(set(rejected)) == 4
    assert dispatcher.stats.rejected == 4
    assert sqlite_stack.queue.pending_count() == 0
    for run_id in run_ids:
        snapshot = sqlite_stack.engine.runs.get(run_id)
        assert snapshot.run.status is RunStatus.RUNNING
        assert snapshot.step("reserve").status is StepStatus.SUCCEEDED
        assert snapshot.step("charge").status is StepStatus.PENDING


def test_transport_errors_are_retried_until_runs_complete(sqlite_stack: SQLiteStack) -> None:
    """With one of two worker URLs refusing connections, deliveries retry and runs finish."""
    run_ids = sqlite_stack.start_runs(10)
    with ThreadedServer(worker_app(sqlite_stack.engine)) as worker:
        delivery = HttpDelivery([closed_port_url(), worker.url], KEY, cooldown_seconds=0.2)
        dispatcher = Dispatcher(sqlite_stack.queue, delivery)
        run_dispatcher(dispatcher)

    assert sqlite_stack.statuses(run_ids) == {RunStatus.COMPLETED: 10}
    assert dispatcher.stats.errors >= 1
    assert dispatcher.stats.released == dispatcher.stats.errors
    assert set(sqlite_stack.calls.calls.values()) == {1}


def test_duplicate_fault_delivers_twice_but_runs_each_step_once(tmp_path: Path) -> None:
    """Every message delivered twice at once still runs each single-attempt step once."""
    stack = build_stack(tmp_path, max_attempts=1)
    try:
        run_ids = stack.start_runs(20)
        dispatcher = Dispatcher(
            stack.queue,
            InProcessDelivery(stack.engine),
            faults=FaultPlan.parse("*:duplicate@1;seed=3"),
        )
        run_dispatcher(dispatcher)

        assert stack.statuses(run_ids) == {RunStatus.COMPLETED: 20}
        assert len(stack.calls.calls) == 60
        assert set(stack.calls.calls.values()) == {1}
        stats = dispatcher.stats
        assert stats.duplicates == stats.acked == 60
        assert stats.delivered == 120
    finally:
        stack.engine.close()
        stack.database.close()


def test_duplicate_rules_match_on_step_and_action(sqlite_stack: SQLiteStack) -> None:
    """A duplicate rule naming one step duplicates only that step's deliveries."""
    sqlite_stack.start_runs(5)
    dispatcher = Dispatcher(
        sqlite_stack.queue,
        InProcessDelivery(sqlite_stack.engine),
        faults=FaultPlan.parse("trio.charge:duplicate@1"),
    )
    run_dispatcher(dispatcher)

    assert dispatcher.stats.duplicates == 5
    assert set(sqlite_stack.calls.calls.values()) == {1}


def test_duplicate_rules_for_another_saga_duplicate_nothing(sqlite_stack: SQLiteStack) -> None:
    """Messages name their saga, so a rule for another saga's same-named step never fires."""
    sqlite_stack.start_runs(5)
    dispatcher = Dispatcher(
        sqlite_stack.queue,
        InProcessDelivery(sqlite_stack.engine),
        faults=FaultPlan.parse("other.charge:duplicate@1"),
    )
    run_dispatcher(dispatcher)

    assert dispatcher.stats.duplicates == 0
    assert dispatcher.stats.acked == 15


def test_stop_flushes_acks_and_can_restart(sqlite_stack: SQLiteStack) -> None:
    """A stopped dispatcher has acknowledged what it finished and resumes on start."""
    first = sqlite_stack.start_runs(5)
    dispatcher = Dispatcher(sqlite_stack.queue, InProcessDelivery(sqlite_stack.engine))

    async def twice() -> None:
        async with dispatcher:
            await dispatcher.run_until_idle(timeout_seconds=30)
            assert sqlite_stack.queue.pending_count() == 0
            second = await asyncio.to_thread(sqlite_stack.start_runs, 5)
            await dispatcher.start()
            await dispatcher.run_until_idle(timeout_seconds=30)
            await dispatcher.stop()
            assert sqlite_stack.statuses(second) == {RunStatus.COMPLETED: 5}

    asyncio.run(twice())

    assert sqlite_stack.statuses(first) == {RunStatus.COMPLETED: 5}
    assert dispatcher.stats.acked == 30
    assert not dispatcher.is_running


def test_backoff_grows_from_a_tenth_of_a_second_to_ten_seconds() -> None:
    """Failed-delivery backoff doubles per delivery, with jitter, and is capped at 10 s."""
    import random

    rng = random.Random(1)
    assert 0.05 <= backoff_seconds(1, rng) <= 0.1
    assert 0.1 <= backoff_seconds(2, rng) <= 0.2
    assert 5.0 <= backoff_seconds(30, rng) <= 10.0
    assert 5.0 <= backoff_seconds(10_000, rng) <= 10.0
