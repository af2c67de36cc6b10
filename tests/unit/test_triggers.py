"""Topic patterns, schedules and idempotent trigger starts."""

from __future__ import annotations

import pytest

from core import DefinitionError, RunStatus, Saga, StepContext
from core.domain.triggers import topic_matches, validate_pattern
from core.engine.triggers import UnknownScheduleError
from core.scheduling import fire_times_between
from infra.memory.harness import memory_harness


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders.created", "orders.created", True),
        ("orders.*", "orders.created", True),
        ("orders.*", "orders.eu.created", False),
        ("orders.*.created", "orders.eu.created", True),
        ("orders.**", "orders", True),
        ("orders.**", "orders.eu.created", True),
        ("**.created", "orders.eu.created", True),
        ("**", "anything.at.all", True),
        ("orders.**.done", "orders.done", True),
        ("orders.**.done", "orders.a.b.done", True),
        ("orders.**.done", "orders.a.b.fail", False),
        ("orders.created", "orders.updated", False),
    ],
)
def test_topic_patterns_match_with_single_and_multi_segment_wildcards(
    pattern: str, topic: str, expected: bool
) -> None:
    """``*`` matches one segment and ``**`` any number of segments."""
    assert topic_matches(pattern, topic) is expected


def test_invalid_patterns_and_schedules_are_refused() -> None:
    """Bad topic segments, cron expressions, zones and names raise DefinitionError."""
    with pytest.raises(DefinitionError):
        validate_pattern("orders.$bad")
    saga = Saga("sched")
    with pytest.raises(DefinitionError, match="not a valid cron"):
        saga.schedule("nightly", "not cron")
    with pytest.raises(DefinitionError, match="time zone"):
        saga.schedule("nightly", "0 3 * * *", timezone="Mars/Base")
    with pytest.raises(DefinitionError, match="schedule name"):
        saga.schedule("Nightly Job", "0 3 * * *")


def test_fire_times_respect_the_time_zone() -> None:
    """A 03:00 Europe/Paris schedule fires at 01:00 UTC in summer (UTC+2)."""
    start = 1_719_792_000.0  # 2024-07-01T00:00:00Z
    times = fire_times_between("0 3 * * *", "Europe/Paris", after=start, until=start + 2 * 86400)
    assert [t - start for t in times] == [3600, 86400 + 3600]


def make_saga() -> Saga:
    saga = Saga("greeter")

    @saga.step
    def greet(ctx: StepContext) -> str:
        return f"hello {ctx.input.get('name', 'nobody')}"

    saga.on_event("users.*.created")
    saga.on_event("users.**")  # overlapping pattern: still one run per event
    saga.schedule("hourly-greeting", "0 * * * *", input={"name": "cron"})
    return saga


def test_an_event_starts_one_run_per_saga_however_often_delivered() -> None:
    """Redelivering the same event id finds the same run instead of starting another."""
    h = memory_harness([make_saga()])
    first = h.engine.triggers.publish(topic="users.eu.created", data={"name": "ada"}, event_id="e1")
    again = h.engine.triggers.publish(topic="users.eu.created", data={"name": "ada"}, event_id="e1")
    assert len(first.started) == 1 and first.started[0].is_created
    assert (
        again.started[0].run.run_id == first.started[0].run.run_id
        and not again.started[0].is_created
    )
    assert h.engine.triggers.publish(topic="orders.created", data={}, event_id="e2").started == []
    h.pump()
    assert h.engine.runs.get(first.started[0].run.run_id).run.output == {"greet": "hello ada"}


def test_a_scheduled_time_starts_exactly_one_run() -> None:
    """Firing the same schedule for the same time twice yields one run; another time, another."""
    h = memory_harness([make_saga()])
    one = h.engine.triggers.fire_schedule(name="hourly-greeting", scheduled_at=1_700_000_000)
    two = h.engine.triggers.fire_schedule(name="hourly-greeting", scheduled_at=1_700_000_000)
    other = h.engine.triggers.fire_schedule(name="hourly-greeting", scheduled_at=1_700_003_600)
    assert one.run.run_id == two.run.run_id != other.run.run_id
    with pytest.raises(UnknownScheduleError):
        h.engine.triggers.fire_schedule(name="nope", scheduled_at=0)
    h.pump()
    assert h.engine.runs.get(one.run.run_id).run.status is RunStatus.COMPLETED


def test_a_saga_that_fails_to_import_does_not_block_other_events() -> None:
    """Events still start runs of healthy sagas when another saga's module is broken."""
    from core.registry import SagaRegistry

    h = memory_harness([make_saga()])
    registry = SagaRegistry({"greeter": h.registry.get("greeter"), "broken": "no.such.module:saga"})
    h.engine.triggers._registry = registry
    outcome = h.engine.triggers.publish(topic="users.eu.created", data={"name": "x"}, event_id="e9")
    assert [r.run.saga for r in outcome.started] == ["greeter"]
    assert [s.name for _, s in h.engine.triggers.schedules()] == ["hourly-greeting"]
