"""The worker's delivery routes: authentication first, then the step protocol's answer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from core.domain.records import Message, RunId, RunSnapshot, StateChange, StepName
from core.domain.status import Action, StepStatus
from core.engine.saga_runner import HandleResult
from core.errors import StoreUnavailable
from core.signing import SIGNATURE_HEADER
from functions.http.app import create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import (
    SIGNING_KEY,
    STEP_CALLS,
    TestClient,
    assert_nothing_written,
    json_body,
    signed,
)


@dataclass(frozen=True)
class StartedRun:
    """A run started through the API, before any step ran."""

    run_id: str
    first_step: bytes  # the signed-delivery body of its first message


@pytest.fixture
def started_run(client: TestClient) -> StartedRun:
    """One PENDING run of ``greet`` whose first message sits in the queue."""
    run_id = client.post("/v1/sagas/greet/runs", json={"name": "Ada"}).json()["run_id"]
    message = Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1)
    return StartedRun(run_id, json_body(message.to_json()))


def snapshot(store: SQLiteStateStore, run_id: str) -> RunSnapshot | None:
    return store.load_run(run_id=RunId(run_id))


HeadersFor = Callable[[str, bytes], dict[str, str]]
"""Headers for a POST of ``body`` to ``path``."""


def valid_signature(path: str, body: bytes) -> dict[str, str]:
    return signed(body, path=path)


def no_signature(path: str, body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json"}


def forged_signature(path: str, body: bytes) -> dict[str, str]:
    forged = f"t={int(time.time())},n={'n' * 22},v2={'0' * 64}"
    return {SIGNATURE_HEADER: forged, "Content-Type": "application/json"}


def stale_signature(path: str, body: bytes) -> dict[str, str]:
    return signed(body, path=path, now=time.time() - 3600)


def other_key_signature(path: str, body: bytes) -> dict[str, str]:
    return signed(body, path=path, key=b"someone-elses-key")


def malformed_signature(path: str, body: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: "not a signature", "Content-Type": "application/json"}


def signature_of_other_body(path: str, body: bytes) -> dict[str, str]:
    return signed(body + b" ", path=path)


REFUSED = [
    (no_signature, 401),
    (forged_signature, 403),
    (stale_signature, 403),
    (other_key_signature, 403),
    (malformed_signature, 403),
    (signature_of_other_body, 403),
]


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers_for", "status"), REFUSED, ids=lambda v: getattr(v, "__name__", v)
)
def test_unauthenticated_or_forged_step_delivery_is_refused_and_changes_nothing(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    started_run: StartedRun,
    headers_for: HeadersFor,
    status: int,
) -> None:
    """Missing credentials answer 401, bad ones 403; run, queue and step stay untouched."""
    before = snapshot(sqlite_store, started_run.run_id)
    body = started_run.first_step

    response = client.post("/v1/steps", content=body, headers=headers_for("/v1/steps", body))

    assert response.status_code == status
    assert response.json()["error"] == ("unauthenticated" if status == 401 else "forbidden")
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Relay-HMAC")
    assert snapshot(sqlite_store, started_run.run_id) == before
    assert sqlite_queue.pending_count() == 1
    assert STEP_CALLS == {}


def test_authentication_comes_before_parsing(client: TestClient) -> None:
    """An unsigned delivery that is not even JSON answers 401, not 400."""
    assert client.post("/v1/steps", content=b"{not json").status_code == 401


@pytest.mark.parametrize("operation", ["retry", "cancel"])
@pytest.mark.parametrize(
    ("headers_for", "status"), REFUSED[:3], ids=lambda v: getattr(v, "__name__", v)
)
def test_retry_and_cancel_require_authentication(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    started_run: StartedRun,
    operation: str,
    headers_for: HeadersFor,
    status: int,
) -> None:
    """Admin operations refuse unsigned or forged calls and leave the run as it was."""
    before = snapshot(sqlite_store, started_run.run_id)
    path = f"/v1/runs/{started_run.run_id}/{operation}"

    response = client.post(path, headers=headers_for(path, b""))

    assert response.status_code == status
    assert snapshot(sqlite_store, started_run.run_id) == before
    assert sqlite_queue.pending_count() == 1


def test_signed_cancel_answers_with_the_run_view(
    client: TestClient, started_run: StartedRun
) -> None:
    """An authenticated cancel stops the run and answers 200 with its view."""
    path = f"/v1/runs/{started_run.run_id}/cancel"
    response = client.post(path, headers=signed(b"", path=path))

    assert response.status_code == 200
    assert response.json()["run_id"] == started_run.run_id
    assert response.json()["status"] in {"COMPENSATING", "CANCELLED"}
    assert [step["name"] for step in response.json()["steps"]] == ["write_text", "deliver"]


def test_signed_retry_of_a_run_that_did_not_fail_is_409(
    client: TestClient, started_run: StartedRun
) -> None:
    """Retrying a run that is not FAILED answers 409 naming its status."""
    path = f"/v1/runs/{started_run.run_id}/retry"
    response = client.post(path, headers=signed(b"", path=path))

    assert response.status_code == 409
    assert (response.json()["error"], response.json()["status"]) == ("invalid_run_state", "PENDING")


def test_signed_admin_call_for_an_unknown_run_is_404(client: TestClient) -> None:
    """Cancelling a run that does not exist answers 404."""
    path = "/v1/runs/r-missing/cancel"
    assert client.post(path, headers=signed(b"", path=path)).status_code == 404


# -- the step protocol through HTTP ---------------------------------------------------


def test_signed_delivery_processes_the_step(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    started_run: StartedRun,
) -> None:
    """A correctly signed message runs its step, commits it and queues the next one (200)."""
    body = started_run.first_step
    response = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert response.status_code == 200
    assert response.json() == {"status": "done", "detail": "committed"}
    assert STEP_CALLS == {"write_text": 1}
    after = snapshot(sqlite_store, started_run.run_id)
    assert after is not None
    assert after.step("write_text").status is StepStatus.SUCCEEDED
    assert sqlite_queue.pending_count() == 2  # the delivered message (unacked here) + the next


def test_duplicate_signed_delivery_is_acknowledged_without_rerunning_the_step(
    client: TestClient, sqlite_store: SQLiteStateStore, started_run: StartedRun
) -> None:
    """A redelivered message finds the step finished, acknowledges it and runs nothing."""
    body = started_run.first_step
    first = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))
    after_first = snapshot(sqlite_store, started_run.run_id)

    second = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["status"] == "done"
    assert STEP_CALLS == {"write_text": 1}
    assert snapshot(sqlite_store, started_run.run_id) == after_first


def test_delivery_while_another_worker_holds_the_lease_is_503_with_retry_after(
    client: TestClient, sqlite_store: SQLiteStateStore, started_run: StartedRun
) -> None:
    """A step claimed by a live lease answers 503 with Retry-After, so the queue waits."""
    run = snapshot(sqlite_store, started_run.run_id)
    assert run is not None
    now = time.time()
    claimed = run.step("write_text").claimed(now=now, lease_until=now + 100, error=None)
    sqlite_store.apply(change=StateChange(run.run.run_id, steps=(claimed,)))

    body = started_run.first_step
    response = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert response.status_code == 503
    payload = response.json()
    assert payload["status"] == "retry"
    assert 99 < payload["retry_after_seconds"] <= 100
    assert response.headers["retry-after"] == str(math.ceil(payload["retry_after_seconds"]))
    assert STEP_CALLS == {}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json_body({"run_id": "r-1", "step": "write_text", "attempt": 1}),
        json_body({"run_id": "r-1", "step": "write_text", "action": "explode", "attempt": 1}),
        json_body({"run_id": "r-1", "step": "write_text", "action": "execute", "attempt": -1}),
    ],
    ids=["not-json", "not-object", "missing-action", "unknown-action", "negative-attempt"],
)
def test_malformed_message_is_400_with_the_reason(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue, body: bytes
) -> None:
    """A signed but malformed message answers 400 (dropped as permanent) and writes nothing."""
    response = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert response.status_code == 400
    assert response.json()["message"]
    assert_nothing_written(sqlite_store, sqlite_queue)


class _FailingEngine:
    """Stands in for the engine to make ``handle`` fail the way a backend outage does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def handle(self, message: Message) -> HandleResult:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [(StoreUnavailable("database is locked"), 503, "1"), (KeyError("bug"), 500, None)],
    ids=["infrastructure", "unexpected"],
)
def test_engine_failures_ask_the_queue_to_redeliver(
    caplog: pytest.LogCaptureFixture, error: Exception, status: int, retry_after: str | None
) -> None:
    """An outage answers 503 with Retry-After 1; a bug answers 500, logged with the run id."""
    failing = _FailingEngine(error)
    app = create_app(
        engine=lambda: failing,  # type: ignore[arg-type, return-value]
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=OpenAuthenticator("local"),
    )
    body = json_body(Message(RunId("r-7"), StepName("write_text"), Action.EXECUTE, 1).to_json())

    with TestClient(app) as client:
        response = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    assert "Traceback" not in response.text
    assert any(getattr(r, "run_id", None) == "r-7" for r in caplog.records)


# -- events and schedules -------------------------------------------------------------


def test_signed_event_starts_one_run_per_subscribed_saga_once(
    client: TestClient, sqlite_store: SQLiteStateStore
) -> None:
    """An event starts the subscribed saga; its redelivery finds the same run."""
    body = json_body({"topic": "people.eu.joined", "data": {"name": "Ada"}, "id": "evt-1"})

    first = client.post("/v1/events", content=body, headers=signed(body, path="/v1/events"))
    again = client.post("/v1/events", content=body, headers=signed(body, path="/v1/events"))

    assert (first.status_code, again.status_code) == (202, 202)
    assert len(first.json()["runs"]) == 1
    assert again.json()["runs"] == first.json()["runs"]
    assert [run.run_id for run in sqlite_store.list_runs()] == first.json()["runs"]


def test_event_for_no_subscriber_starts_nothing(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """A topic no saga subscribes to is acknowledged with no runs."""
    body = json_body({"topic": "weather.changed", "data": {}, "id": "evt-2"})

    response = client.post("/v1/events", content=body, headers=signed(body, path="/v1/events"))

    assert (response.status_code, response.json()["runs"]) == (202, [])
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize(
    ("body", "headers_for", "status"),
    [
        (
            json_body({"topic": "people.eu.joined", "data": {"name": "A"}, "id": "e"}),
            no_signature,
            401,
        ),
        (
            json_body({"topic": "people.eu.joined", "data": {"name": "A"}, "id": "e"}),
            forged_signature,
            403,
        ),
        (json_body({"topic": "people..joined", "data": {}, "id": "e"}), valid_signature, 400),
        (json_body({"topic": "people.eu.joined", "data": {}}), valid_signature, 400),
        (b"[1, 2]", valid_signature, 400),
    ],
    ids=["unsigned", "forged", "bad-topic", "missing-id", "not-object"],
)
def test_refused_event_writes_nothing(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    body: bytes,
    headers_for: HeadersFor,
    status: int,
) -> None:
    """Unauthenticated, forged or malformed events are refused before any run starts."""
    response = client.post("/v1/events", content=body, headers=headers_for("/v1/events", body))

    assert response.status_code == status
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_signed_schedule_starts_one_run_per_scheduled_time(
    client: TestClient, sqlite_store: SQLiteStateStore
) -> None:
    """Firing a schedule twice for the same time finds the same run; another time starts one."""
    body = json_body({"scheduled_time": "2026-01-01T03:00:00Z"})
    same_time = json_body({"scheduled_time": "2026-01-01T04:00:00+01:00"})
    next_day = json_body({"scheduled_time": "2026-01-02T03:00:00Z"})

    path = "/v1/schedules/nightly-greeting"
    first = client.post(path, content=body, headers=signed(body, path=path))
    again = client.post(path, content=same_time, headers=signed(same_time, path=path))
    later = client.post(path, content=next_day, headers=signed(next_day, path=path))

    assert (first.status_code, again.status_code, later.status_code) == (202, 202, 202)
    assert again.json()["run_id"] == first.json()["run_id"]
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    assert later.json()["run_id"] != first.json()["run_id"]
    assert len(sqlite_store.list_runs()) == 2


def test_schedule_without_a_time_starts_a_run_now(client: TestClient) -> None:
    """An empty body fires the schedule for the current time."""
    path = "/v1/schedules/nightly-greeting"
    response = client.post(path, headers=signed(b"", path=path))

    assert response.status_code == 202
    assert client.get(f"/v1/runs/{response.json()['run_id']}").json()["input"] == {
        "name": "night shift",
        "times": 1,
    }


@pytest.mark.parametrize(
    ("path", "body", "headers_for", "status"),
    [
        ("/v1/schedules/nightly-greeting", b"", no_signature, 401),
        ("/v1/schedules/nightly-greeting", b"", stale_signature, 403),
        ("/v1/schedules/no-such-schedule", b"", valid_signature, 404),
        (
            "/v1/schedules/nightly-greeting",
            json_body({"scheduled_time": "yesterday"}),
            valid_signature,
            400,
        ),
        ("/v1/schedules/nightly-greeting", json_body({"scheduled_time": 17}), valid_signature, 400),
    ],
    ids=["unsigned", "stale", "unknown", "bad-time", "not-a-string"],
)
def test_refused_schedule_writes_nothing(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    path: str,
    body: bytes,
    headers_for: HeadersFor,
    status: int,
) -> None:
    """Unauthenticated, unknown or malformed scheduled invocations start nothing."""
    response = client.post(path, content=body, headers=headers_for(path, body))

    assert response.status_code == status
    assert_nothing_written(sqlite_store, sqlite_queue)
