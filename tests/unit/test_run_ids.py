"""Run ids: client keys, schedules and events name runs in disjoint key spaces (issue 10)."""

from __future__ import annotations

import hashlib

import pytest

from core import Saga, StepContext
from core.domain.run_ids import (
    MAX_CLIENT_KEY_LENGTH,
    RUN_ID_PATTERN,
    KeySpace,
    RunKey,
    is_valid_client_key,
    new_run_id,
    run_id_for_client_key,
)
from core.errors import InvalidIdempotencyKeyError
from core.scheduling import iso_utc
from infra.memory.harness import memory_harness

SCHEDULED_AT = 1_719_792_000.0  # 2024-07-01T00:00:00Z, an hourly fire time


def make_saga() -> Saga:
    saga = Saga("greeter")

    @saga.step
    def greet(ctx: StepContext) -> str:
        return f"hello {ctx.input.get('name', 'nobody')}"

    saga.on_event("users.created")
    saga.schedule("hourly", "0 * * * *", input={"name": "cron"})
    return saga


def hostile_client_keys(event_id: str) -> list[str]:
    """Every key a caller could try to reach the engine's own runs with."""
    when = iso_utc(SCHEDULED_AT)
    return [
        f"schedule:hourly:{when}",
        f"event:{event_id}",
        "schedule:",
        "event:",
        "schedule",
        "event",
        "s-",
        "e-",
        RunKey.schedule("hourly", when).run_id("greeter"),
        RunKey.event(event_id).run_id("greeter"),
    ]


def test_client_keys_can_never_name_a_schedule_or_event_run() -> None:
    """No client key, however crafted, derives the run id of a schedule or an event."""
    engine_ids = {
        RunKey.schedule("hourly", iso_utc(SCHEDULED_AT)).run_id("greeter"),
        RunKey.event("evt-1").run_id("greeter"),
    }
    for key in hostile_client_keys("evt-1"):
        client_id = RunKey.client(key).run_id("greeter")
        assert client_id.startswith("k-")
        assert client_id not in engine_ids


def test_run_ids_carry_the_prefix_of_their_key_space() -> None:
    """r- fresh, k- client, s- schedule, e- event; every one matches RUN_ID_PATTERN."""
    ids = {
        "r": new_run_id(SCHEDULED_AT),
        KeySpace.CLIENT.value: RunKey.client("order-42").run_id("greeter"),
        KeySpace.SCHEDULE.value: RunKey.schedule("hourly", "2024-07-01T00:00:00Z").run_id("g"),
        KeySpace.EVENT.value: RunKey.event("evt-1").run_id("greeter"),
    }
    for prefix, run_id in ids.items():
        assert run_id.startswith(f"{prefix}-")
        assert RUN_ID_PATTERN.match(run_id)


def test_client_key_derivation_is_unchanged_so_existing_keyed_runs_are_found() -> None:
    """A key sent before key spaces existed still names the same run (k- + sha256)."""
    legacy = "k-" + hashlib.sha256(b"greeter\x00order-42").hexdigest()[:32]
    assert RunKey.client("order-42").run_id("greeter") == legacy
    assert run_id_for_client_key("greeter", "order-42") == legacy


def test_schedule_parts_cannot_be_shifted_to_collide() -> None:
    """Two different (name, time) pairs never share a run id, even with ':' in them."""
    assert RunKey.schedule("a:b", "c").run_id("s") != RunKey.schedule("a", "b:c").run_id("s")
    assert RunKey.event("x").run_id("s") != RunKey.schedule("x", "").run_id("s")


def test_the_stored_key_text_says_where_the_run_came_from() -> None:
    """The run record keeps the client's key as sent, or schedule:/event: text."""
    assert RunKey.client("order-42").text == "order-42"
    assert RunKey.schedule("hourly", "T").text == "schedule:hourly:T"
    assert RunKey.event("evt-1").text == "event:evt-1"


@pytest.mark.parametrize(
    "key",
    ["", "k" * (MAX_CLIENT_KEY_LENGTH + 1), "caf\xe9", "tab\there", "nul\x00", "del\x7f", "\u2603"],
    ids=["empty", "too-long", "latin-1", "tab", "nul", "del", "unicode"],
)
def test_bad_client_keys_are_refused_before_anything_is_written(key: str) -> None:
    """A client key that is not 1-200 printable ASCII raises and stores no run."""
    h = memory_harness([make_saga()])
    assert not is_valid_client_key(key)
    with pytest.raises(InvalidIdempotencyKeyError):
        h.engine.runs.start("greeter", {"name": "ada"}, idempotency_key=key)
    assert h.engine.runs.list() == []


def test_a_client_cannot_pre_create_a_future_scheduled_run() -> None:
    """A caller who starts runs with the schedule's and the event's old keys blocks nothing."""
    h = memory_harness([make_saga()])
    for key in hostile_client_keys("evt-1"):
        h.engine.runs.start("greeter", {"name": "mallory"}, idempotency_key=key)

    scheduled = h.engine.triggers.fire_schedule(name="hourly", scheduled_at=SCHEDULED_AT)
    event = h.engine.triggers.publish(topic="users.created", data={"name": "ada"}, event_id="evt-1")

    assert scheduled.is_created and scheduled.run.input == {"name": "cron"}
    assert scheduled.run.run_id.startswith("s-")
    assert scheduled.run.idempotency_key == f"schedule:hourly:{iso_utc(SCHEDULED_AT)}"
    [started] = event.started
    assert started.is_created and started.run.input == {"name": "ada"}
    assert started.run.run_id.startswith("e-")
    assert started.run.idempotency_key == "event:evt-1"
