"""Large run inputs over HTTP on the local backend: offloaded to files, refused at the door."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine.engine import Engine
from core.engine.saga_runner import RunnerSettings
from core.registry import SagaRegistry
from functions.http.app import ALL_ROUTES, MAX_BODY_BYTES, create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from infra.local.fs_io_manager import FilesystemIOManager
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import SIGNING_KEY, TestClient, assert_nothing_written, greet

ONE_MIB_NAME = "x" * 1_000_000
"""With its JSON around it, a body just under the 1 MiB HTTP limit."""


def test_a_one_mib_input_starts_a_run_and_the_view_shows_it(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    """The input goes to a file under the run, the record keeps a reference, GET shows it."""
    response = client.post("/v1/sagas/greet/runs", json={"name": ONE_MIB_NAME, "times": 1})

    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    reference = engine.runs.get(run_id).run.input
    assert reference["$ref"].startswith((tmp_path / "outputs" / run_id / "$input").as_uri())
    view = client.get(f"/v1/runs/{run_id}")
    assert view.status_code == 200
    assert view.json()["input"] == {"name": ONE_MIB_NAME, "times": 1}


@pytest.fixture
def small_client(
    tmp_path: Path, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> Iterator[TestClient]:
    """The app over an engine that keeps run inputs of at most 100 KB."""
    engine = Engine(
        registry=SagaRegistry({greet.name: greet}),
        store=sqlite_store,
        queue=sqlite_queue,
        io_manager=FilesystemIOManager(tmp_path / "outputs"),
        settings=RunnerSettings(max_input_bytes=100_000),
    )
    app = create_app(
        engine=lambda: engine,
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=OpenAuthenticator("local"),
        include=ALL_ROUTES,
    )
    with TestClient(app) as test_client:
        yield test_client
    engine.close()


def test_an_input_over_the_largest_kept_is_422_and_writes_nothing(
    small_client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    tmp_path: Path,
) -> None:
    """Within the body limit but over what a run keeps: 422 input_too_large, no write."""
    response = small_client.post(
        "/v1/sagas/greet/runs", json={"name": "x" * 200_000}, headers={"Idempotency-Key": "k-1"}
    )

    assert response.status_code == 422
    body = response.json()
    assert (body["error"], body["limit"]) == ("input_too_large", 100_000)
    assert body["size_bytes"] > 200_000
    assert_nothing_written(sqlite_store, sqlite_queue)
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_a_body_over_the_http_limit_is_413_and_writes_nothing(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """Over the 1 MiB body limit the answer is 413, before the input is even parsed."""
    response = client.post("/v1/sagas/greet/runs", json={"name": "x" * MAX_BODY_BYTES})

    assert response.status_code == 413
    assert_nothing_written(sqlite_store, sqlite_queue)
