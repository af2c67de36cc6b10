"""Wait steps as definitions: limits, what a wait may not have, and how the manifest lists them."""

from __future__ import annotations

import pytest

from core.domain.saga import MAX_WAIT_SECONDS, CompensationDefinition, Saga
from core.errors import DefinitionError
from core.registry import SagaRegistry
from tests.support.sagas import HOUR, payment_saga, sleeper
from tooling.manifest import build_manifest


@pytest.mark.parametrize("seconds", [0, -1, MAX_WAIT_SECONDS + 1])
def test_a_sleep_outside_its_limits_is_refused(seconds: float) -> None:
    """A sleep of zero, negative or over 30 days is refused when declared."""
    with pytest.raises(DefinitionError, match="seconds of step 'nap'"):
        Saga("s").sleep("nap", seconds=seconds)


def test_a_wait_step_has_no_compensation_and_needs_a_valid_topic() -> None:
    """A wait step refuses a bad topic and a compensation."""
    saga = Saga("s")
    with pytest.raises(DefinitionError, match="invalid segment"):
        saga.wait_for_event("w", topic="bad topic")
    saga.wait_for_event("w", topic="a.b")
    with pytest.raises(DefinitionError, match="only waits"):
        saga.set_compensation("w", CompensationDefinition(fn=lambda ctx: None))


def test_the_manifest_lists_wait_steps_and_the_topics_they_resume_on() -> None:
    """The manifest tells sleeps, event waits and tasks apart, with the topics that resume."""
    registry = SagaRegistry()
    registry.register(payment_saga([]))
    registry.register(sleeper())
    manifest = build_manifest(registry)
    kinds = {
        f"{saga['name']}.{step['name']}": (step["kind"], step["wait"])
        for saga in manifest["sagas"]
        for step in saga["steps"]
    }
    assert kinds["sleeper.nap"] == (
        "sleep",
        {"sleep_seconds": HOUR, "topic": None, "timeout_seconds": None},
    )
    assert kinds["checkout.paid"][0] == "event"
    assert kinds["checkout.reserve"] == ("task", None)
    assert {
        "pattern": "payments.*",
        "saga": "checkout",
        "starts": False,
        "resumes": "paid",
    } in manifest["events"]
