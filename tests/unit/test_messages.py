"""The versioned wire form of queue messages: format 2 names the saga, format 1 still loads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.domain.messages import MESSAGE_FORMAT, Message, RunId, StepName
from core.domain.status import Action


def charge(saga: str | None = "order", not_before: float | None = None) -> Message:
    return Message(RunId("r-1"), StepName("charge"), Action.EXECUTE, 2, not_before, saga=saga)


def test_format_2_round_trips_with_its_saga() -> None:
    """What to_json writes (as any queue stores it, as JSON text) parses to the same message."""
    message = charge(not_before=1_700_000_000.5)
    body = json.loads(json.dumps(message.to_json()))
    assert body["format"] == MESSAGE_FORMAT == 2
    assert body["saga"] == "order"
    assert Message.from_json(body) == message


def test_a_format_1_body_in_flight_during_an_upgrade_still_loads() -> None:
    """A body written before messages named their saga loads, saga unknown, same id."""
    legacy = {"run_id": "r-1", "step": "charge", "action": "execute", "attempt": 2}
    message = Message.from_json(legacy)
    assert message.saga is None
    assert message == charge(saga=None)
    assert message.message_id == charge().message_id == "r-1/charge/execute/2"


def test_the_saga_is_not_part_of_the_deduplicating_id() -> None:
    """A run id names one run of one saga already; the id must equal the format-1 one."""
    assert charge("order").message_id == charge("other").message_id == charge(None).message_id


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"format": 3}, "format' is 3"),
        ({"format": True}, "format' is True"),
        ({"format": 2, "saga": ""}, "'saga' must be a non-empty string"),
        ({"format": 2, "saga": 7}, "'saga' must be a non-empty string"),
        ({"format": 2, "saga": None, "not_before": "soon"}, "'not_before' must be a number"),
        ({"format": 2, "saga": "order", "action": "explode"}, "unknown value 'explode'"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_field(body: dict[str, Any], error: str) -> None:
    """A bad field or an unknown format is a ValueError that says which."""
    base = {"run_id": "r-1", "step": "charge", "action": "execute", "attempt": 2}
    with pytest.raises(ValueError, match=error):
        Message.from_json({**base, **body})


def test_format_2_without_a_saga_field_is_refused() -> None:
    """Format 2 always carries 'saga' (null only for hand-built messages)."""
    body = {"format": 2, "run_id": "r-1", "step": "charge", "action": "execute", "attempt": 1}
    with pytest.raises(ValueError, match="missing field 'saga'"):
        Message.from_json(body)
    assert Message.from_json({**body, "saga": None}).saga is None
