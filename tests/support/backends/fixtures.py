"""Adapter fixtures for the suites that run once per registered adapter (contract, engine).

One registry serves both suites: a state store registered here runs the state-store
contract suite (``tests/contract``) and the engine's protocol suite (``tests/engine``,
marker ``protocol``), whose ``saga_harness`` fixture builds a ``core.testing.SagaHarness``
on each registered store.

To add an adapter (Firestore, DynamoDB, Cloud Tasks, SQS, GCS, S3...), write one fixture
function and decorate it with the registrar of its port (``registry.py``): local ones
below, cloud ones in ``aws.py`` / ``gcp.py`` beside this module, which it imports. The
parametrised fixtures at the bottom pick up every registered fixture. A test directory
uses them with ``from tests.support.backends.fixtures import *`` in its conftest.py.

* ``@state_store_backend`` fixtures return a :class:`StoreAndQueue`: the store, and the
  queue its outbox lands on when the store delivers its own outbox (else None).
* ``@pull_queue_backend`` fixtures return a ``PullQueue``.
* ``@io_manager_backend`` fixtures return an ``IOManager``.
* ``@api_key_store_backend`` fixtures return an ``ApiKeyStore``.

Every fixture takes the shared ``clock`` so that "now" in a test and the enqueue time an
adapter stamps agree, and cleans up after itself (``filterwarnings = error`` turns an
unclosed resource into a failure).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from core.domain.saga import Saga
from core.engine.saga_runner import RunnerSettings
from core.faults import FaultPlan
from core.ports.api_keys import ApiKeyStore
from core.ports.clock import FixedClock
from core.ports.io_manager import IOManager
from core.ports.state_store import StateStore
from core.ports.task_queue import PullQueue
from core.testing import DEFAULT_SETTINGS, SagaHarness
from infra.local.fs_io_manager import FilesystemIOManager
from infra.local.sqlite_api_keys import SQLiteApiKeyStore
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from infra.memory.api_keys import MemoryApiKeyStore
from infra.memory.io_manager import MemoryIOManager
from infra.memory.state_store import MemoryStateStore
from infra.memory.task_queue import MemoryTaskQueue
from tests.support.backends.registry import (
    API_KEY_STORE_BACKENDS,
    IO_MANAGER_BACKENDS,
    PULL_QUEUE_BACKENDS,
    STATE_STORE_BACKENDS,
    StoreAndQueue,
    api_key_store_backend,
    io_manager_backend,
    pull_queue_backend,
    state_store_backend,
)


@pytest.fixture
def clock() -> FixedClock:
    """The one clock every adapter in a test reads."""
    return FixedClock()


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[SQLiteDatabase]:
    """A fresh SQLite file, closed (all thread connections) after the test."""
    database = SQLiteDatabase(tmp_path / "relay.db")
    yield database
    database.close()


# --- state stores ----------------------------------------------------------------------


@state_store_backend
def memory_store(clock: FixedClock) -> StoreAndQueue:
    return StoreAndQueue(store=MemoryStateStore(), outbox_queue=None)


@state_store_backend
def sqlite_store(sqlite_database: SQLiteDatabase, clock: FixedClock) -> StoreAndQueue:
    return StoreAndQueue(
        store=SQLiteStateStore(sqlite_database, clock=clock.now),
        outbox_queue=SQLiteTaskQueue(sqlite_database, clock=clock.now),
    )


# --- pull queues -----------------------------------------------------------------------


@pull_queue_backend
def memory_queue(clock: FixedClock) -> PullQueue:
    return MemoryTaskQueue(clock=clock.now)


@pull_queue_backend
def sqlite_queue(sqlite_database: SQLiteDatabase, clock: FixedClock) -> PullQueue:
    return SQLiteTaskQueue(sqlite_database, clock=clock.now)


# --- I/O managers ----------------------------------------------------------------------


@io_manager_backend
def memory_io(clock: FixedClock) -> IOManager:
    return MemoryIOManager()


@io_manager_backend
def filesystem_io(tmp_path: Path) -> IOManager:
    return FilesystemIOManager(tmp_path / "results")


# --- API key stores ---------------------------------------------------------------------


@api_key_store_backend
def memory_keys() -> ApiKeyStore:
    return MemoryApiKeyStore()


@api_key_store_backend
def sqlite_keys(sqlite_database: SQLiteDatabase) -> ApiKeyStore:
    return SQLiteApiKeyStore(sqlite_database)


# --- cloud backends: one module each; importing them registers their fixtures ----------

from tests.support.backends.aws import *  # noqa: E402, F403
from tests.support.backends.gcp import *  # noqa: E402, F403

# --- the parametrised fixtures the suites use (keep these last) -------------------------


def _backend_id(fixture_name: str) -> str:
    return fixture_name.rsplit("_", 1)[0]


# Stores that enqueue a change's outbox inside their own transaction. The outbox tests are
# collected only for these (the engine enqueues for the others; tests/engine covers that),
# and the store_and_queue fixture fails if a store disagrees with this list.
OUTBOX_STORES = frozenset({"sqlite_store"})


PROTOCOL_MARKER = "protocol"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect outbox tests for stores that leave the outbox to the engine; check that
    every ``protocol`` test runs once per state store (and every per-store engine test is
    marked ``protocol``), so ``-m protocol`` lists the whole suite on every backend."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    misplaced: list[str] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("store_and_queue") if callspec else None
        fixtures = getattr(item, "fixturenames", ())
        is_marked = item.get_closest_marker(PROTOCOL_MARKER) is not None
        if is_marked != ("saga_harness" in fixtures):
            misplaced.append(item.nodeid)
        if "outbox_queue" in fixtures and backend is not None and backend not in OUTBOX_STORES:
            dropped.append(item)
        else:
            kept.append(item)
    if misplaced:
        raise pytest.UsageError(
            f"tests marked {PROTOCOL_MARKER!r} must use the saga_harness fixture (one run per "
            f"state store) and tests using it must be marked: {', '.join(misplaced[:5])}"
        )
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=STATE_STORE_BACKENDS, ids=_backend_id)
def store_and_queue(request: pytest.FixtureRequest) -> StoreAndQueue:
    """Each registered state store, with the queue its outbox lands on (if any)."""
    result: StoreAndQueue = request.getfixturevalue(request.param)
    assert result.store.delivers_outbox == (request.param in OUTBOX_STORES), (
        f"{request.param}: delivers_outbox is {result.store.delivers_outbox}; update OUTBOX_STORES"
    )
    return result


@pytest.fixture
def state_store(store_and_queue: StoreAndQueue) -> StateStore:
    """Each registered state store."""
    return store_and_queue.store


@pytest.fixture
def outbox_queue(store_and_queue: StoreAndQueue, request: pytest.FixtureRequest) -> PullQueue:
    """The queue a store delivers its own outbox to (outbox tests run only on such stores)."""
    assert store_and_queue.outbox_queue is not None, (
        f"{request.node.callspec.params.get('store_and_queue')} is listed in OUTBOX_STORES "
        "but has no outbox queue"
    )
    return store_and_queue.outbox_queue


@pytest.fixture(params=PULL_QUEUE_BACKENDS, ids=_backend_id)
def pull_queue(request: pytest.FixtureRequest) -> PullQueue:
    """Each registered pull queue."""
    result: PullQueue = request.getfixturevalue(request.param)
    return result


@pytest.fixture(params=API_KEY_STORE_BACKENDS, ids=_backend_id)
def api_key_store(request: pytest.FixtureRequest) -> ApiKeyStore:
    """Each registered API key store."""
    result: ApiKeyStore = request.getfixturevalue(request.param)
    return result


@pytest.fixture(params=IO_MANAGER_BACKENDS, ids=_backend_id)
def io_manager(request: pytest.FixtureRequest) -> IOManager:
    """Each registered I/O manager."""
    result: IOManager = request.getfixturevalue(request.param)
    return result


class MakeHarness(Protocol):
    """Builds a ``SagaHarness`` on the state store under test (``saga_harness`` fixture)."""

    def __call__(
        self,
        sagas: Iterable[Saga[Any]],
        *,
        faults: FaultPlan | None = None,
        settings: RunnerSettings = DEFAULT_SETTINGS,
        wrap_queue: Callable[[PullQueue], PullQueue] | None = None,
    ) -> SagaHarness: ...


@pytest.fixture
def saga_harness(store_and_queue: StoreAndQueue, clock: FixedClock) -> Iterator[MakeHarness]:
    """Harnesses on each registered state store, all on the test's one clock.

    A store that delivers its own outbox (SQLite) is paired with the queue it delivers
    to; the others with the memory queue, which keeps time by the same ``FixedClock``
    (queues have their own contract suite). Outputs over the inline limit go to the
    memory I/O manager. ``wrap_queue`` lets a test put a faulty queue in front.
    Harnesses are closed after the test.
    """
    made: list[SagaHarness] = []

    def make(
        sagas: Iterable[Saga[Any]],
        *,
        faults: FaultPlan | None = None,
        settings: RunnerSettings = DEFAULT_SETTINGS,
        wrap_queue: Callable[[PullQueue], PullQueue] | None = None,
    ) -> SagaHarness:
        queue: PullQueue = store_and_queue.outbox_queue or MemoryTaskQueue(clock=clock.now)
        harness = SagaHarness(
            sagas,
            store=store_and_queue.store,
            queue=wrap_queue(queue) if wrap_queue else queue,
            clock=clock,
            io_manager=MemoryIOManager(),
            settings=settings,
            faults=faults,
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def engine_enqueues(store_and_queue: StoreAndQueue, request: pytest.FixtureRequest) -> None:
    """Skip on stores that enqueue inside their own commit: nothing can fall in between."""
    if store_and_queue.store.delivers_outbox:
        backend = _backend_id(request.node.callspec.params["store_and_queue"])
        pytest.skip(
            f"{backend} commits and enqueues in one transaction (an outbox): there is no "
            "moment between the two to crash in"
        )
