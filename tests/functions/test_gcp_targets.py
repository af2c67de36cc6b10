"""The functions-framework targets in functions/gcp.py, driven through the framework's own app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from functions_framework.aio import create_asgi_app

from core.domain.records import Message, RunId, StateChange, StepName
from core.domain.status import Action, StepStatus
from functions import _wiring
from tests.functions.support import SIGNING_KEY, STEP_CALLS, TestClient, json_body, signed

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "functions" / "gcp.py"

TargetClient = Callable[[str], TestClient]


@pytest.fixture
def target_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetClient]:
    """Opens a test client on a target, configured like a deployment serving ``greet``."""
    monkeypatch.setenv("RELAY_BACKEND", "local")
    monkeypatch.setenv("RELAY_DATA_DIR", str(tmp_path / "relay-data"))
    monkeypatch.setenv("RELAY_SAGA_MODULES", "greet=tests.functions.support:greet")
    monkeypatch.setenv("RELAY_SAGAS", "greet")
    monkeypatch.setenv("RELAY_SIGNING_KEY", SIGNING_KEY.decode())
    clients: list[TestClient] = []

    def open_client(target: str) -> TestClient:
        client = TestClient(create_asgi_app(target=target, source=str(SOURCE)))
        clients.append(client.__enter__())
        return client

    yield open_client
    for client in clients:
        client.__exit__(None, None, None)
    sys.modules.pop("gcp", None)  # the framework loads the source file as module "gcp"


def test_relay_target_answers_healthz(target_client: TargetClient) -> None:
    """GET /healthz through the framework answers 200 from Relay's own route."""
    response = target_client("relay").get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_relay_target_starts_a_run_and_reads_it_back(target_client: TargetClient) -> None:
    """A start through the framework answers 202 with its headers; the run is then readable."""
    client = target_client("relay")

    started = client.post(
        "/v1/sagas/greet/runs", json={"name": "Ada"}, headers={"Idempotency-Key": "gcp-1"}
    )
    view = client.get(started.headers["location"])

    assert started.status_code == 202
    assert started.headers["content-type"] == "application/json"
    assert view.status_code == 200
    assert view.json()["run_id"] == started.json()["run_id"]
    assert [step["name"] for step in view.json()["steps"]] == ["write_text", "deliver"]


def test_relay_target_keeps_error_statuses_and_headers(target_client: TargetClient) -> None:
    """Error statuses, bodies and headers survive the dispatch (422, and 503 with Retry-After)."""
    client = target_client("relay")
    invalid = client.post("/v1/sagas/greet/runs", json={"times": 3})
    run_id = client.post("/v1/sagas/greet/runs", json={"name": "Ada"}).json()["run_id"]
    store = _wiring.get_engine().store  # the engine the target built on first use
    run = store.load_run(run_id=RunId(run_id))
    assert run is not None
    now = time.time()
    claimed = run.step("write_text").evolve(
        now=now, status=StepStatus.RUNNING, attempt=1, lease_until=now + 30, started_at=now
    )
    store.apply(change=StateChange(run.run.run_id, steps=(claimed,)))
    body = json_body(Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1).to_json())

    busy = client.post("/v1/steps", content=body, headers=signed(body))

    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["name"]
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "30"


def test_worker_target_processes_a_signed_delivery(target_client: TargetClient) -> None:
    """The worker target authenticates and runs a step; it does not serve the public API."""
    api, worker = target_client("api"), target_client("worker")
    run_id = api.post("/v1/sagas/greet/runs", json={"name": "Ada"}).json()["run_id"]
    body = json_body(Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1).to_json())

    unsigned = worker.post("/v1/steps", content=body)
    delivered = worker.post("/v1/steps", content=body, headers=signed(body))

    assert unsigned.status_code == 401
    assert (delivered.status_code, delivered.json()["status"]) == (200, "done")
    assert STEP_CALLS == {"write_text": 1}
    assert worker.post("/v1/sagas/greet/runs", json={"name": "Ada"}).status_code == 404
    assert api.post("/v1/steps", content=body, headers=signed(body)).status_code == 404


def test_importing_the_targets_builds_no_engine() -> None:
    """Importing functions.gcp loads neither SQLite nor the engine (cold start stays cheap)."""
    probe = (
        "import sys, functions.gcp; "
        "print(sorted(m for m in ('sqlite3', 'infra.local.sqlite_db', 'functions._wiring', "
        "'core.engine.engine') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "RELAY_DATA_DIR": "/nonexistent/relay"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "[]"
