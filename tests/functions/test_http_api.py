"""The public HTTP API driven in-process: starting, reading and listing runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.engine.engine import Engine
from core.registry import SagaRegistry
from functions.http.app import MAX_BODY_BYTES, PUBLIC_API, create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import SIGNING_KEY, TestClient, assert_nothing_written

OPEN = OpenAuthenticator("local")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def start(client: TestClient, payload: object = None, **headers: str) -> httpx.Response:
    return client.post(
        "/v1/sagas/greet/runs",
        json={"name": "Ada"} if payload is None else payload,
        headers=headers,
    )


# -- starting runs --------------------------------------------------------------------


def test_start_answers_202_with_the_run_id_and_its_location(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """A valid start creates one PENDING run, queues its first step and points to it."""
    response = start(client)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["created"] is True
    assert response.headers["location"] == f"/v1/runs/{body['run_id']}"
    assert [run.run_id for run in sqlite_store.list_runs()] == [body["run_id"]]
    assert sqlite_queue.pending_count() == 1


def test_same_idempotency_key_returns_the_same_run_and_creates_it_once(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """Repeating a start with the same key answers 202 with the first run; one run exists."""
    first = start(client, **{"Idempotency-Key": "order-42"})
    second = start(client, **{"Idempotency-Key": "order-42"})

    assert first.status_code == second.status_code == 202
    assert second.json()["run_id"] == first.json()["run_id"]
    assert (first.json()["created"], second.json()["created"]) == (True, False)
    assert len(sqlite_store.list_runs()) == 1
    assert sqlite_queue.pending_count() == 1


def test_reusing_an_idempotency_key_with_other_input_is_409(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """A key that already started a run with different input is refused and writes nothing."""
    first = start(client, {"name": "Ada"}, **{"Idempotency-Key": "k-1"})
    before = sqlite_store.load_run(run_id=RunId(first.json()["run_id"]))

    response = start(client, {"name": "Grace"}, **{"Idempotency-Key": "k-1"})

    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_key_reused"
    assert response.json()["run_id"] == first.json()["run_id"]
    assert sqlite_store.load_run(run_id=RunId(first.json()["run_id"])) == before
    assert len(sqlite_store.list_runs()) == 1
    assert sqlite_queue.pending_count() == 1


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"name": "Ada", "times": 0}, ["times"]),
        ({"times": 2}, ["name"]),
        ({"name": "Ada", "times": "many"}, ["times"]),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    payload: dict[str, object],
    loc: list[str],
) -> None:
    """Input the saga's model rejects answers 422 with the field's location; nothing is written."""
    response = start(client, payload)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert [entry["loc"] for entry in body["detail"]] == [loc]
    assert {"msg", "type"} <= body["detail"][0].keys()
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_unknown_saga_is_404(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """Starting a saga the bundle does not serve answers 404 and writes nothing."""
    response = client.post("/v1/sagas/nope/runs", json={"name": "Ada"})

    assert response.status_code == 404
    assert response.json()["error"] == "unknown_saga"
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_a_saga_that_does_not_import_is_503_without_its_details(
    sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue, tmp_path: Path
) -> None:
    """A deployed saga module that fails to import: 503 (retry later), nothing written, and
    the public body names neither the module nor the error (the log has them)."""
    (tmp_path / "trip.py").write_text("import secret_internal_billing_lib\n")
    broken = Engine(
        registry=SagaRegistry({"trip": f"{tmp_path / 'trip.py'}:saga"}),
        store=sqlite_store,
        queue=sqlite_queue,
    )
    app = create_app(
        engine=lambda: broken,
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=OPEN,
        include=frozenset({PUBLIC_API}),
    )
    with TestClient(app) as client:
        response = client.post("/v1/sagas/trip/runs", json={})
    broken.close()

    assert response.status_code == 503
    assert response.json()["error"] == "misconfigured"
    assert "secret_internal_billing_lib" not in response.text and "trip.py" not in response.text
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize(
    "body",
    [b'{"name": "Ada"', b"", b"   ", b'{"name": "\xff\xfe"}', b"NaN", b'{"name": Infinity}'],
    ids=["truncated", "empty", "blank", "not-utf8", "nan", "infinity"],
)
def test_malformed_json_is_400(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue, body: bytes
) -> None:
    """A body that is not strict UTF-8 JSON answers 400 and writes nothing."""
    response = client.post(
        "/v1/sagas/greet/runs", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize(
    "key",
    ["k" * 201, "", "caf\xe9", "tab\there", "bell\x07", "nul\x00", "del\x7f"],
    ids=["too-long", "empty", "non-ascii", "tab", "control", "nul", "del"],
)
def test_bad_idempotency_key_header_is_400_naming_the_header(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue, key: str
) -> None:
    """An Idempotency-Key that is not 1-200 printable ASCII characters answers 400."""
    response = client.post(
        "/v1/sagas/greet/runs",
        json={"name": "Ada"},
        headers=[("Idempotency-Key", key.encode("latin-1"))],
    )

    assert response.status_code == 400
    assert response.json()["header"] == "Idempotency-Key"
    assert "Idempotency-Key" in response.json()["message"]
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_longest_allowed_idempotency_key_is_accepted(client: TestClient) -> None:
    """A key of exactly 200 printable characters starts a run."""
    assert start(client, **{"Idempotency-Key": "~" * 200}).status_code == 202


def test_oversized_body_is_413(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """A body over the cap answers 413 and writes nothing."""
    response = start(client, {"name": "x" * MAX_BODY_BYTES})

    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_oversized_body_without_content_length_is_413(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """A chunked body is counted as it streams in, so omitting Content-Length does not help."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/v1/sagas/greet/runs", content=chunks())

    assert response.status_code == 413
    assert_nothing_written(sqlite_store, sqlite_queue)


# -- reading runs ---------------------------------------------------------------------


def test_run_view_has_the_contract_shape_with_steps_in_definition_order(
    client: TestClient, engine: Engine
) -> None:
    """GET /v1/runs/{id} shows the header, input and each step, in the saga's order."""
    run_id = start(client, {"name": "Ada", "times": 2}).json()["run_id"]
    engine.handle(Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1))

    response = client.get(f"/v1/runs/{run_id}")

    assert response.status_code == 200
    view = response.json()
    assert view.keys() >= {
        "run_id",
        "saga",
        "status",
        "input",
        "output",
        "error",
        "created_at",
        "updated_at",
        "compensation_reason",
        "audit",
        "error_detail",
        "steps",
    }
    assert view["audit"] == []
    assert (view["run_id"], view["saga"], view["status"]) == (run_id, "greet", "RUNNING")
    assert view["input"] == {"name": "Ada", "times": 2}
    assert (view["output"], view["error"]) == (None, None)
    assert ISO_UTC.match(view["created_at"]) and ISO_UTC.match(view["updated_at"])
    first, second = view["steps"]
    assert set(first) == {
        "name",
        "status",
        "attempts",
        "execute_attempts",
        "compensation_attempts",
        "started_at",
        "finished_at",
        "error",
        "error_detail",
    }
    assert (first["name"], first["status"], first["attempts"]) == ("write_text", "SUCCEEDED", 1)
    assert (first["execute_attempts"], first["compensation_attempts"]) == (1, 0)
    assert ISO_UTC.match(first["started_at"]) and ISO_UTC.match(first["finished_at"])
    assert second == {
        "name": "deliver",
        "status": "PENDING",
        "attempts": 0,
        "execute_attempts": 0,
        "compensation_attempts": 0,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "error_detail": None,
    }


def test_unknown_run_is_404(client: TestClient) -> None:
    """Reading a run that does not exist answers 404 with a JSON error."""
    response = client.get("/v1/runs/r-does-not-exist")

    assert response.status_code == 404
    assert response.json()["error"] == "run_not_found"


def test_list_filters_by_saga_and_status_and_limits(client: TestClient, engine: Engine) -> None:
    """GET /v1/runs returns entries without steps or run data, newest first, filtered, limited."""
    older = start(client, {"name": "Ada"}).json()["run_id"]
    newer = start(client, {"name": "Grace"}).json()["run_id"]
    engine.handle(Message(RunId(older), StepName("write_text"), Action.EXECUTE, 1))

    every = client.get("/v1/runs").json()["runs"]
    running = client.get("/v1/runs", params={"status": "RUNNING"}).json()["runs"]
    either = client.get("/v1/runs", params={"status": "PENDING,RUNNING", "saga": "greet"})
    other_saga = client.get("/v1/runs", params={"saga": "other"}).json()["runs"]
    limited = client.get("/v1/runs", params={"limit": "1"}).json()["runs"]

    assert [run["run_id"] for run in every] == [newer, older]
    assert set(every[0]) == {"run_id", "saga", "status", "created_at", "updated_at"}
    assert [run["run_id"] for run in running] == [older]
    assert len(either.json()["runs"]) == 2
    assert other_saga == []
    assert [run["run_id"] for run in limited] == [newer]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "SLEEPING"}, "status"),
        ({"status": "RUNNING,NOPE"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "2.5"}, "limit"),
    ],
)
def test_list_rejects_a_bad_status_or_limit_with_422_naming_it(
    client: TestClient, params: dict[str, str], parameter: str
) -> None:
    """An unknown status or a limit outside 1..1000 answers 422 naming the parameter."""
    response = client.get("/v1/runs", params=params)

    assert response.status_code == 422
    body = response.json()
    assert body["parameter"] == parameter
    assert body["detail"][0]["loc"] == ["query", parameter]
    assert parameter in body["message"]


# -- the app itself -------------------------------------------------------------------


def test_healthz_answers_without_building_the_engine() -> None:
    """The health check never calls the engine factory, so it costs no cold start."""
    calls: list[str] = []

    def engine_factory() -> Engine:
        calls.append("built")
        raise AssertionError("healthz must not build the engine")

    app = create_app(engine=engine_factory, verifier=HmacVerifier(SIGNING_KEY), authenticator=OPEN)
    with TestClient(app) as client:
        response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert calls == []


def test_unknown_routes_and_methods_answer_json_errors(client: TestClient) -> None:
    """Routing errors use the same JSON error body as everything else."""
    missing = client.get("/v2/nothing")
    wrong_method = client.delete("/v1/runs")

    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


def test_public_api_app_does_not_serve_worker_routes(engine: Engine) -> None:
    """An app built for the public API group has no delivery or admin routes."""
    app = create_app(
        engine=lambda: engine,
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=OPEN,
        include=frozenset({PUBLIC_API}),
    )
    with TestClient(app) as client:
        assert client.post("/v1/steps", content=b"{}").status_code == 404
        assert client.post("/v1/runs/r-1/cancel").status_code == 404
        assert client.get("/v1/runs").status_code == 200


def test_unexpected_failure_is_500_without_leaking_details(
    sqlite_store: SQLiteStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception is logged with its traceback and answered with a bare 500."""

    def broken_engine() -> Engine:
        raise RuntimeError("database password is hunter2")

    app = create_app(engine=broken_engine, verifier=HmacVerifier(SIGNING_KEY), authenticator=OPEN)
    with TestClient(app) as client:
        response = client.get("/v1/runs/r-1")

    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert any(record.exc_info for record in caplog.records if record.name == "relay.http")
