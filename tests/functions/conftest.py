"""Fixtures for the entry-point tests: an engine on SQLite in tmp_path and the HTTP app over it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine.engine import Engine
from core.registry import SagaRegistry
from functions import wiring
from functions.http.app import ALL_ROUTES, create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from infra.local.fs_io_manager import FilesystemIOManager
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import SIGNING_KEY, STEP_CALLS, TestClient, greet


@pytest.fixture(autouse=True)
def clean_environment() -> Iterator[None]:
    """Restore os.environ, sys.path and logging, and drop the cached engine, after each test."""
    saved_environ = dict(os.environ)
    saved_path = list(sys.path)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    STEP_CALLS.clear()
    yield
    wiring.reset_engine()  # closes the cached engine and its database
    os.environ.clear()
    os.environ.update(saved_environ)
    sys.path[:] = saved_path
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[SQLiteDatabase]:
    """The embedded backend's database file, closed after the test."""
    database = SQLiteDatabase(tmp_path / "relay.db")
    yield database
    database.close()


@pytest.fixture
def sqlite_store(sqlite_database: SQLiteDatabase) -> SQLiteStateStore:
    """The state store the app writes to (tests read it to prove what was written)."""
    return SQLiteStateStore(sqlite_database)


@pytest.fixture
def sqlite_queue(sqlite_database: SQLiteDatabase) -> SQLiteTaskQueue:
    """The queue the store's outbox lands in."""
    return SQLiteTaskQueue(sqlite_database)


@pytest.fixture
def engine(
    tmp_path: Path, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> Iterator[Engine]:
    """An engine on the SQLite backend serving only the test saga ``greet``."""
    built = Engine(
        registry=SagaRegistry({greet.name: greet}),
        store=sqlite_store,
        queue=sqlite_queue,
        io_manager=FilesystemIOManager(tmp_path / "outputs"),
    )
    yield built
    built.close()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    """The whole HTTP app (every route group) over ``engine``, verifying HMAC deliveries."""
    app = create_app(
        engine=lambda: engine,
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=OpenAuthenticator("local"),
        include=ALL_ROUTES,
    )
    with TestClient(app) as test_client:
        yield test_client
