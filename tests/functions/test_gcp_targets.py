"""The functions-framework targets in functions/gcp.py, driven through the framework's own app."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from functions_framework.aio import create_asgi_app

from core.domain.records import Message, RunId, StateChange, StepName
from core.domain.saga import Saga
from core.domain.status import Action
from core.errors import ConfigurationError
from core.ports.api_keys import issue_key
from core.registry import SagaRegistry
from functions import wiring
from functions.http.verifiers import verifier_for
from functions.settings import Settings
from infra.gcp.cloud_tasks import CloudTasksQueue
from infra.local.sqlite_api_keys import SQLiteApiKeyStore
from infra.local.sqlite_queue import SQLiteTaskQueue
from tests.support.entry_points import SIGNING_KEY, STEP_CALLS, TestClient, json_body, signed
from tests.support.gcp import TasksEmulator

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "functions" / "gcp.py"

TargetClient = Callable[[str], TestClient]


@pytest.fixture
def target_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetClient]:
    """Opens a test client on a target, configured like a deployment serving ``greet``."""
    monkeypatch.setenv("RELAY_BACKEND", "local")
    monkeypatch.setenv("RELAY_DATA_DIR", str(tmp_path / "relay-data"))
    monkeypatch.setenv("RELAY_SAGA_MODULES", "greet=tests.support.entry_points:greet")
    monkeypatch.setenv("RELAY_SAGAS", "greet")
    monkeypatch.setenv("RELAY_SIGNING_KEY", SIGNING_KEY.decode())
    # The local default is RELAY_API_AUTH=api_key: the run API is called with a real key.
    keys = SQLiteApiKeyStore.from_settings(tmp_path / "relay-data")
    issued = issue_key(grants="*:start,read", description="tests", now=time.time())
    keys.create_key(record=issued.record)
    keys.database.close()
    clients: list[TestClient] = []

    def open_client(target: str) -> TestClient:
        client = TestClient(
            create_asgi_app(target=target, source=str(SOURCE)),
            headers={"X-Api-Key": issued.text},
        )
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
    store = wiring.get_engine().store  # the engine the target built on first use
    run = store.load_run(run_id=RunId(run_id))
    assert run is not None
    now = time.time()
    claimed = run.step("write_text").claimed(now=now, lease_until=now + 30, error=None)
    store.apply(change=StateChange(run.run.run_id, steps=(claimed,)))
    body = json_body(Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1).to_json())

    busy = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

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
    delivered = worker.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert unsigned.status_code == 401
    assert (delivered.status_code, delivered.json()["status"]) == (200, "done")
    assert STEP_CALLS == {"write_text": 1}
    assert worker.post("/v1/sagas/greet/runs", json={"name": "Ada"}).status_code == 404
    assert (
        api.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps")).status_code
        == 404
    )


def test_importing_the_targets_builds_no_engine() -> None:
    """Importing functions.gcp loads neither SQLite nor the engine (cold start stays cheap)."""
    probe = (
        "import sys, functions.gcp; "
        "print(sorted(m for m in ('sqlite3', 'infra.local.sqlite_db', 'functions.wiring', "
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


# -- Pub/Sub push, Eventarc CloudEvents, Cloud Scheduler, sweep --------------------------


def pubsub_envelope(
    data: Any, *, message_id: str = "m-1", attributes: dict[str, str] | None = None
) -> dict[str, Any]:
    """What a Pub/Sub push subscription POSTs (data base64 of JSON unless given as str)."""
    encoded = data if isinstance(data, str) else base64.b64encode(json.dumps(data).encode())
    return {
        "message": {
            "data": encoded if isinstance(encoded, str) else encoded.decode(),
            "attributes": {"relay_topic": "people.eu.joined"} if attributes is None else attributes,
            "messageId": message_id,
            "publishTime": "2026-11-27T12:00:00.000Z",
        },
        "subscription": "projects/relay-test/subscriptions/relay-events",
    }


def post_signed(client: TestClient, path: str, payload: Any, **headers: str) -> Any:
    body = json_body(payload)
    return client.post(path, content=body, headers={**signed(body, path=path), **headers})


def test_pubsub_push_starts_one_run_per_message_id(target_client: TargetClient) -> None:
    """A push envelope starts the subscribed saga; a redelivery of the message id does not."""
    worker = target_client("worker")
    envelope = pubsub_envelope({"name": "Ada"}, message_id="msg-42")

    first = post_signed(worker, "/v1/events", envelope)
    again = post_signed(worker, "/v1/events", envelope)

    assert first.status_code == again.status_code == 202
    assert len(first.json()["runs"]) == 1
    assert again.json()["runs"] == first.json()["runs"]
    runs = wiring.get_engine().runs.list(saga="greet", statuses=None, limit=10)
    assert [run.run_id for run in runs] == first.json()["runs"]
    assert runs[0].input == {"name": "Ada", "times": 1}


def test_pubsub_push_topic_comes_from_the_subscription_mapping(
    target_client: TargetClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a topic attribute, RELAY_PUBSUB_TOPICS maps the subscription id to a topic."""
    monkeypatch.setenv("RELAY_PUBSUB_TOPICS", json.dumps({"relay-events": "people.us.joined"}))
    worker = target_client("worker")

    response = post_signed(worker, "/v1/events", pubsub_envelope({"name": "Bo"}, attributes={}))

    assert response.status_code == 202 and len(response.json()["runs"]) == 1


@pytest.mark.parametrize(
    ("data", "attributes", "reason"),
    [
        ("%%not-base64%%", None, "not valid base64"),
        (base64.b64encode(b"{secret-token: 'hunter2'").decode(), None, "not JSON"),
        ({"name": "Ada"}, {}, "no Relay topic"),
        ({"name": "Ada"}, {"relay_topic": "bad topic!"}, "must be dot-separated"),
    ],
)
def test_malformed_pubsub_message_is_acknowledged_and_dead_lettered(
    target_client: TargetClient,
    caplog: pytest.LogCaptureFixture,
    data: Any,
    attributes: dict[str, str] | None,
    reason: str,
) -> None:
    """Bad base64, non-JSON data or no topic: 200 (no redelivery), an ERROR log, no run."""
    worker = target_client("worker")

    with caplog.at_level(logging.WARNING, logger="relay.events"):
        response = post_signed(
            worker, "/v1/events", pubsub_envelope(data, message_id="bad-1", attributes=attributes)
        )

    assert response.status_code == 200
    assert response.json()["status"] == "dead_lettered"
    assert reason in response.json()["reason"]
    records = [r for r in caplog.records if r.name == "relay.events"]
    assert [r.levelno for r in records] == [logging.ERROR]
    assert getattr(records[0], "message_id", None) == "bad-1"
    assert "hunter2" not in caplog.text  # never the payload
    assert wiring.get_engine().runs.list(saga="greet", statuses=None, limit=10) == []


def test_event_of_no_known_shape_is_refused(target_client: TargetClient) -> None:
    """A body that is neither a push envelope nor a Relay event is a 400 naming both."""
    response = post_signed(target_client("worker"), "/v1/events", {"hello": "world"})

    assert response.status_code == 400
    assert "Pub/Sub push envelope" in response.json()["message"]


def test_pubsub_push_without_credentials_is_refused(target_client: TargetClient) -> None:
    """An unsigned push changes nothing (401)."""
    worker = target_client("worker")

    response = worker.post("/v1/events", json=pubsub_envelope({"name": "Ada"}))

    assert response.status_code == 401


def cloud_event_headers(message_id: str, topic: str = "people.eu.joined") -> dict[str, str]:
    """Binary-mode CloudEvent headers as Eventarc sends them for a Pub/Sub message."""
    return {
        "ce-id": message_id,
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/relay-test/topics/{topic}",
        "content-type": "application/json",
    }


def test_pubsub_cloud_event_target_starts_one_run(target_client: TargetClient) -> None:
    """The ``pubsub`` target starts a run named by the message id (Pub/Sub topic id = topic)."""
    client = target_client("pubsub")
    envelope = pubsub_envelope({"name": "Cy"}, message_id="ce-1", attributes={})

    first = client.post("/", json=envelope, headers=cloud_event_headers("ce-1"))
    again = client.post("/", json=envelope, headers=cloud_event_headers("ce-1"))

    assert first.status_code == again.status_code == 200
    runs = wiring.get_engine().runs.list(saga="greet", statuses=None, limit=10)
    assert len(runs) == 1 and runs[0].input == {"name": "Cy", "times": 1}


def test_pubsub_cloud_event_with_bad_data_is_acknowledged(
    target_client: TargetClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Undecodable data is acknowledged (200, no Eventarc retry) and logged, no run."""
    client = target_client("pubsub")
    envelope = pubsub_envelope("@@@", message_id="ce-bad", attributes={})

    with caplog.at_level(logging.WARNING, logger="relay.events"):
        response = client.post("/", json=envelope, headers=cloud_event_headers("ce-bad"))

    assert response.status_code == 200
    assert "not valid base64" in caplog.text
    assert wiring.get_engine().runs.list(saga="greet", statuses=None, limit=10) == []


def test_scheduled_invocation_retried_with_the_same_time_starts_one_run(
    target_client: TargetClient,
) -> None:
    """Cloud Scheduler's X-CloudScheduler-ScheduleTime names the run: a retry finds it."""
    worker = target_client("worker")
    header = {"X-CloudScheduler-ScheduleTime": "2026-11-27T03:00:00Z"}

    first = post_signed(worker, "/v1/schedules/nightly-greeting", {}, **header)
    retry = post_signed(worker, "/v1/schedules/nightly-greeting", {}, **header)
    later = {"X-CloudScheduler-ScheduleTime": "2026-11-28T03:00:00Z"}
    next_day = post_signed(worker, "/v1/schedules/nightly-greeting", {}, **later)

    assert (first.status_code, first.json()["created"]) == (202, True)
    assert (retry.json()["run_id"], retry.json()["created"]) == (first.json()["run_id"], False)
    assert next_day.json()["run_id"] != first.json()["run_id"]


def test_scheduled_invocation_without_a_time_rounds_to_the_cron(
    target_client: TargetClient,
) -> None:
    """Without a scheduled time, calls within one cron period start one run."""
    worker = target_client("worker")

    first = post_signed(worker, "/v1/schedules/nightly-greeting", {})
    retry = post_signed(worker, "/v1/schedules/nightly-greeting", {})

    assert first.status_code == 202
    assert retry.json()["run_id"] == first.json()["run_id"]
    run = wiring.get_engine().runs.get(first.json()["run_id"]).run
    assert run.input == {"name": "night shift", "times": 1}


def test_latest_fire_time_is_the_cron_time_at_or_before_now() -> None:
    """03:00 daily: 03:00:00 itself and 04:10 both map to 03:00; 02:59 to the day before."""
    from datetime import UTC, datetime

    from core.domain.triggers import Schedule
    from functions.http.push_parsing import latest_fire_time

    nightly = Schedule("nightly", "0 3 * * *")

    def at(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    assert latest_fire_time([nightly], name="nightly", now=at("2026-11-27T03:00:00")) == at(
        "2026-11-27T03:00:00"
    )
    assert latest_fire_time([nightly], name="nightly", now=at("2026-11-27T04:10:00")) == at(
        "2026-11-27T03:00:00"
    )
    assert latest_fire_time([nightly], name="nightly", now=at("2026-11-27T02:59:00")) == at(
        "2026-11-26T03:00:00"
    )


def test_unknown_schedule_is_404(target_client: TargetClient) -> None:
    """A schedule the bundle does not declare is refused, nothing started."""
    response = post_signed(target_client("worker"), "/v1/schedules/no-such-job", {})

    assert response.status_code == 404


def test_sweep_route_redrives_a_stalled_run(target_client: TargetClient) -> None:
    """``POST /v1/sweep`` (authenticated) re-enqueues the messages of a stalled run."""
    api, worker = target_client("api"), target_client("worker")
    api.post("/v1/sagas/greet/runs", json={"name": "Ada"})
    queue = wiring.get_engine().queue
    assert isinstance(queue, SQLiteTaskQueue)
    lost = queue.lease_due(now=time.time() + 60, limit=10, lease_seconds=60)
    queue.ack(receipts=[delivery.receipt for delivery in lost])  # the first message is lost

    unsigned = worker.post("/v1/sweep", json={"stale_after_seconds": 0})
    swept = post_signed(worker, "/v1/sweep", {"stale_after_seconds": 0})

    assert unsigned.status_code == 401
    assert (swept.status_code, swept.json()["redriven"]) == (200, 1)
    assert queue.pending_count() == 1


# -- configuration: per-saga Cloud Tasks queues, the certificates URL ---------------------


def _saga_on_queue(name: str, queue: str, step: str) -> Saga:
    saga = Saga(name, queue=queue)
    saga.step(lambda ctx: None, name=step)
    return saga


def test_saga_queue_names_route_messages_to_their_cloud_tasks_queue(
    tasks_emulator: TasksEmulator,
) -> None:
    """A saga whose queue is in RELAY_TASKS_QUEUES gets its tasks there; others the default."""
    client = tasks_emulator.client()
    payments = _saga_on_queue("pay", "payments", "charge")
    plain = _saga_on_queue("note", "relay-steps", "write")
    registry = SagaRegistry({"pay": payments, "note": plain})
    with tasks_emulator.queue(client) as default, tasks_emulator.queue(client) as routed:
        queue = CloudTasksQueue(
            client,
            queue_path=default,
            worker_url="http://127.0.0.1:9/v1/steps",  # never due: nothing is delivered
            queue_for=wiring.step_queue_paths(registry, {"payments": routed}),
        )
        later = time.time() + 3600
        queue.enqueue(
            messages=[
                Message(RunId("r-1"), StepName("charge"), Action.EXECUTE, 1, later, saga="pay"),
                Message(RunId("r-2"), StepName("write"), Action.EXECUTE, 1, later, saga="note"),
            ]
        )

        def steps_in(path: str) -> list[str]:
            tasks = client.list_tasks(parent=path)
            return [json.loads(task.http_request.body)["step"] for task in tasks]

        assert steps_in(routed) == ["charge"]
        assert steps_in(default) == ["write"]


def test_one_step_name_in_two_sagas_is_routed_by_saga() -> None:
    """Messages name their saga, so a step name two sagas share goes to each saga's queue."""
    registry = SagaRegistry(
        {
            "a": _saga_on_queue("a", "payments", "charge"),
            "b": _saga_on_queue("b", "other", "charge"),
        }
    )
    payments = "projects/p/locations/l/queues/q"
    route = wiring.step_queue_paths(registry, {"payments": payments})

    def charge(saga: str | None) -> Message:
        return Message(RunId("r-1"), StepName("charge"), Action.EXECUTE, 1, saga=saga)

    assert route(charge("a")) == payments
    assert route(charge("b")) is None  # "other" is not in RELAY_TASKS_QUEUES: the default
    assert route(charge(None)) is None  # a format-1 message in flight: the default queue


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["projects/p/locations/l/queues/q"]', "JSON object of non-empty strings"),
        ('{"payments": "q"}', "must look like projects/PROJECT"),
    ],
)
def test_bad_tasks_queues_setting_fails_at_startup(value: str, message: str) -> None:
    """RELAY_TASKS_QUEUES is checked when the engine is built, naming the variable."""
    env = {
        "RELAY_BACKEND": "gcp",
        "RELAY_TASKS_QUEUE": "projects/p/locations/l/queues/default",
        "RELAY_WORKER_URL": "https://worker.example/v1/steps",
        "RELAY_TASKS_QUEUES": value,
    }

    with pytest.raises(ConfigurationError, match=message):
        wiring.build_backend(Settings.from_env(env))


@pytest.mark.parametrize(
    "url",
    ["http://certs.example.com/keys", "ftp://127.0.0.1/keys", "https:///nohost"],
)
def test_certs_url_must_be_https_or_loopback_http(url: str) -> None:
    """A certificates URL that could be swapped in transit is refused."""
    settings = Settings.from_env(
        {
            "RELAY_BACKEND": "gcp",
            "RELAY_TASKS_AUDIENCE": "https://worker.example",
            "RELAY_TASKS_SERVICE_ACCOUNT": "relay@p.iam.gserviceaccount.com",
            "RELAY_OIDC_CERTS_URL": url,
        }
    )

    with pytest.raises(ConfigurationError, match="RELAY_OIDC_CERTS_URL"):
        verifier_for(settings)


def test_loopback_certs_url_still_checks_issuer_audience_and_identity() -> None:
    """A local certificates URL changes whose keys sign, not which claims are required."""
    from functions.http.oidc import OidcVerifier

    settings = Settings.from_env(
        {
            "RELAY_BACKEND": "gcp",
            "RELAY_TASKS_AUDIENCE": "https://worker.example",
            "RELAY_TASKS_SERVICE_ACCOUNT": "relay@p.iam.gserviceaccount.com",
            "RELAY_OIDC_CERTS_URL": "http://127.0.0.1:1/certs",
        }
    )

    verifier = verifier_for(settings)

    assert isinstance(verifier, OidcVerifier)
    assert verifier._certs._url == "http://127.0.0.1:1/certs"  # type: ignore[attr-defined]
    assert verifier._audience == "https://worker.example"
    assert verifier._issuers == frozenset(("https://accounts.google.com", "accounts.google.com"))
