"""The event shapes the Lambda handler serves, each with a parser: ``infer(event) -> bool``.

Mangum only understands HTTP events, so ``functions/aws.py`` tries these in order and
hands what none of them claims to Mangum (the Powertools/Mangum pattern: one small parser
class per shape, the first that matches wins)::

    shape (parser)        recognised by
    SQS batch             Records[0].eventSource == "aws:sqs"
    scheduler invocation  {"relay": "schedule", "schedule": ...}
    sweeper invocation    {"relay": "sweep"}
    EventBridge event     detail-type + source + detail + id
    SNS notification      Records[0].EventSource == "aws:sns"
    HTTP                  requestContext (API Gateway v1/v2, Function URL) or ALB's

Pure parsing: importing this module loads nothing but the standard library and core.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from core.domain.messages import Message
from core.errors import EngineError

Event = Mapping[str, Any]
SCHEDULE_MARKER: Final = "schedule"
"""Value of ``relay`` in the Input we configure on EventBridge Scheduler targets::

    {"relay": "schedule", "schedule": "<name>", "scheduled_time": "<aws.scheduler.scheduled-time>"}
"""


class UnknownEventShapeError(EngineError):
    """Raised when an invocation's event matches none of the shapes this handler serves."""

    def __init__(self, *, keys: list[str], tried: list[str]) -> None:
        self.keys = keys
        self.tried = tried
        super().__init__(
            f"the Lambda event (top-level keys: {', '.join(keys) or 'none'}) matches none of "
            f"the shapes this handler serves: {', '.join(tried)}. Check the event source "
            "mapping, the scheduler target's Input, or the test payload"
        )


# -- event shapes ---------------------------------------------------------------------


def _first_record(event: Event) -> Mapping[str, Any]:
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        return records[0]
    return {}


class SqsBatch:
    """An SQS event source mapping batch."""

    name: ClassVar[str] = "SQS batch (Records[].eventSource = aws:sqs)"

    @classmethod
    def infer(cls, event: Event) -> bool:
        """True for ``{"Records": [{"eventSource": "aws:sqs", ...}]}``."""
        return _first_record(event).get("eventSource") == "aws:sqs"


def parse_step_message(body: object) -> Message:
    """The step message in an SQS record's body.

    Strict JSON: ``NaN`` and ``Infinity`` are refused (a ``not_before`` of NaN would
    compare false with every time and run at once).

    Raises:
        json.JSONDecodeError: the body is not JSON.
        RecursionError: the body nests too deeply for the parser.
        ValueError: JSON, but not a step message (also a number over Python's digit limit).
        TypeError: the body is not a string.
    """
    if not isinstance(body, str):
        raise TypeError(f"the record's body is {type(body).__name__}, not a string")
    payload = json.loads(body, parse_constant=_refuse_constant)
    if not isinstance(payload, dict):
        raise ValueError(f"the body is a JSON {type(payload).__name__}, not an object")
    return Message.from_json(payload)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


SWEEP_MARKER: Final = "sweep"
"""Value of ``relay`` in the sweeper schedule's Input: ``{"relay": "sweep"}``, optionally
with ``"stale_after_seconds": N`` (the HTTP hosts' ``POST /v1/sweep``)."""


class SweepInvocation:
    """The sweeper's EventBridge Scheduler invocation: re-drive runs that stopped."""

    name: ClassVar[str] = 'sweeper invocation ({"relay": "sweep"})'

    @classmethod
    def infer(cls, event: Event) -> bool:
        """True for the sweeper schedule's Input (``relay`` = ``sweep``)."""
        return event.get("relay") == SWEEP_MARKER

    @staticmethod
    def parse(event: Event, default: float) -> float:
        """How long a run may make no progress before it is re-driven (seconds).

        Raises:
            ValueError: ``stale_after_seconds`` is not a non-negative number.
        """
        value = event.get("stale_after_seconds", default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError("sweeper input 'stale_after_seconds' must be a non-negative number")
        return float(value)


class SchedulerInvocation:
    """An EventBridge Scheduler target invocation with the Input we configure."""

    name: ClassVar[str] = 'scheduler invocation ({"relay": "schedule", "schedule": ...})'

    @classmethod
    def infer(cls, event: Event) -> bool:
        """True for our scheduler Input (``relay`` = ``schedule``)."""
        return event.get("relay") == SCHEDULE_MARKER and "schedule" in event

    @staticmethod
    def parse(event: Event) -> tuple[str, float]:
        """The schedule name and its scheduled time (epoch seconds).

        Raises:
            ValueError: the name is missing or the time is not an ISO-8601 string.
        """
        name, text = event.get("schedule"), event.get("scheduled_time")
        if not isinstance(name, str) or not name:
            raise ValueError("scheduler input field 'schedule' must be a non-empty string")
        if not isinstance(text, str):
            # Without the scheduler's time a retry would start a second run; refuse.
            raise ValueError("scheduler input needs 'scheduled_time' (an ISO-8601 string)")
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return name, moment.timestamp()


@dataclass(frozen=True)
class TopicEvent:
    """An event for the trigger service: its topic, its data and its (unique) id."""

    topic: str
    data: Any
    event_id: str


class EventBridgeEvent:
    """An EventBridge event delivered by a rule; its ``detail-type`` is the topic."""

    name: ClassVar[str] = "EventBridge event (detail-type, source, detail, id)"

    @classmethod
    def infer(cls, event: Event) -> bool:
        """True for an EventBridge event envelope."""
        return all(key in event for key in ("detail-type", "source", "detail", "id"))

    @staticmethod
    def parse(event: Event) -> list[TopicEvent]:
        """One event: topic = ``detail-type``, data = ``detail``, id = the event id."""
        return [TopicEvent(str(event["detail-type"]), event["detail"], str(event["id"]))]


class SnsNotification:
    """SNS records; the topic is the ``topic`` message attribute, else the subject."""

    name: ClassVar[str] = "SNS notification (Records[].EventSource = aws:sns)"

    @classmethod
    def infer(cls, event: Event) -> bool:
        """True for ``{"Records": [{"EventSource": "aws:sns", ...}]}``."""
        return _first_record(event).get("EventSource") == "aws:sns"

    @staticmethod
    def parse(event: Event) -> list[TopicEvent]:
        """Each record: data is the message parsed as JSON (the raw text if it is not).

        A record of the wrong shape becomes an event with an empty topic, which the
        trigger service refuses for that record alone (as any malformed event).
        """
        events: list[TopicEvent] = []
        for record in event["Records"]:
            sns = _mapping(_mapping(record).get("Sns"))
            attribute = _mapping(_mapping(sns.get("MessageAttributes")).get("topic")).get("Value")
            text = sns.get("Message", "")
            try:
                data: Any = json.loads(text) if isinstance(text, str) else text
            except (ValueError, RecursionError):  # not JSON, or nested past the parser
                data = text
            topic = attribute or sns.get("Subject") or ""
            events.append(TopicEvent(str(topic), data, str(sns.get("MessageId", ""))))
        return events


def _mapping(value: object) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (a field of the wrong shape)."""
    return value if isinstance(value, Mapping) else {}


class HttpRequest:
    """API Gateway (HTTP API v2, REST v1), Lambda Function URL and ALB requests."""

    name: ClassVar[str] = "HTTP (API Gateway v1/v2, Function URL, ALB)"

    @classmethod
    def infer(cls, event: Event) -> bool:
        """True when the event carries a request context, as every HTTP source does."""
        context = event.get("requestContext")
        return isinstance(context, Mapping) and (
            "http" in context or "httpMethod" in event or "elb" in context
        )


SHAPES: Final = (
    SqsBatch,
    SchedulerInvocation,
    SweepInvocation,
    EventBridgeEvent,
    SnsNotification,
    HttpRequest,
)
