"""Over HTTP, no Idempotency-Key can occupy the run a schedule or an event will start (issue 10).

The audit's finding 2: ``Idempotency-Key: schedule:<name>:<time>`` pre-created the run of a
future scheduled time with the caller's input, and the scheduler then got 409. Here a caller
tries every key that once named (or looks like it names) an engine-started run; the schedule
and the event then start their own runs, with their own input.
"""

from __future__ import annotations

from core.domain.run_ids import RunKey
from core.engine.engine import Engine
from core.scheduling import iso_utc
from tests.support.entry_points import TestClient

SCHEDULED_AT = 1_795_230_000.0  # 2026-11-21T03:00:00Z, a fire time of nightly-greeting
EVENT_ID = "msg-42"


def hostile_keys() -> list[str]:
    when = iso_utc(SCHEDULED_AT)
    return [
        f"schedule:nightly-greeting:{when}",
        f"event:{EVENT_ID}",
        "schedule:",
        "event:",
        "s-",
        "e-",
        "k-",
        "r-",
        RunKey.schedule("nightly-greeting", when).run_id("greet"),
        RunKey.event(EVENT_ID).run_id("greet"),
    ]


def test_no_client_key_blocks_a_schedule_or_an_event(client: TestClient, engine: Engine) -> None:
    """Runs started with hostile keys stay in the client space; the engine's starts succeed."""
    started = {}
    for key in hostile_keys():
        response = client.post(
            "/v1/sagas/greet/runs", json={"name": "mallory"}, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 202, response.text
        started[key] = response.json()["run_id"]
    assert all(run_id.startswith("k-") for run_id in started.values())

    scheduled = engine.triggers.fire_schedule(name="nightly-greeting", scheduled_at=SCHEDULED_AT)
    event = engine.triggers.publish(
        topic="people.eu.joined", data={"name": "Ada"}, event_id=EVENT_ID
    )

    assert scheduled.is_created and scheduled.run.input == {"name": "night shift", "times": 1}
    assert scheduled.run.run_id.startswith("s-")
    [from_event] = event.started
    assert from_event.is_created and from_event.run.input == {"name": "Ada", "times": 1}
    assert from_event.run.run_id.startswith("e-")
    assert {scheduled.run.run_id, from_event.run.run_id}.isdisjoint(started.values())
    view = client.get(f"/v1/runs/{scheduled.run.run_id}").json()
    assert view["input"] == {"name": "night shift", "times": 1}


def test_the_same_client_key_still_names_the_same_run(client: TestClient) -> None:
    """Key spaces change nothing for clients: a repeated key returns its run."""
    first = client.post(
        "/v1/sagas/greet/runs", json={"name": "Ada"}, headers={"Idempotency-Key": "o-1"}
    )
    again = client.post(
        "/v1/sagas/greet/runs", json={"name": "Ada"}, headers={"Idempotency-Key": "o-1"}
    )
    assert first.json()["run_id"] == again.json()["run_id"]
    assert again.json()["created"] is False
