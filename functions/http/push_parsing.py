"""Parsing pushed event deliveries: Pub/Sub push envelopes, Eventarc CloudEvents, Relay events.

``POST /v1/events`` accepts two shapes, each a parser class with ``infer(payload)``
(STYLE.md, "several event shapes"): a Pub/Sub push envelope (what a push subscription,
and the Pub/Sub emulator, POSTs) and Relay's own ``{"topic", "data", "id"}`` (the local
bus). The ``pubsub`` CloudEvent target of ``functions/gcp.py`` parses Eventarc's
``google.cloud.pubsub.topic.v1.messagePublished`` events with the same rules.

Which Relay topic a Pub/Sub message belongs to, in order:

1. its ``relay_topic`` attribute, else its ``topic`` attribute;
2. ``RELAY_PUBSUB_TOPICS[<subscription id>]``, else ``RELAY_PUBSUB_TOPICS[<topic id>]``
   (the topic id is known only for CloudEvents, whose ``source`` names it);
3. for a CloudEvent only, the Pub/Sub topic id itself (Pub/Sub allows dots in ids, so a
   Pub/Sub topic ``orders.created`` is the Relay topic ``orders.created``).

The event id is the Pub/Sub message id, so a redelivered message starts no second run.
A message that can never be processed (data that is not base64 or not JSON, no message
id, no topic, an invalid topic) raises ``DeadLetter``: the caller acknowledges it and
logs the reason, never the payload, instead of letting Pub/Sub redeliver it forever.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from core.domain.triggers import Schedule, validate_topic
from functions.http.request_parsing import (
    SCHEDULE_TIME_HEADER,
    HttpError,
    JsonRefused,
    json_object,
    loads_strict,
    parse_event,
)

log = logging.getLogger("relay.events")

TOPIC_ATTRIBUTES: Final = ("relay_topic", "topic")
"""Message attributes naming the Relay topic, the first one present wins."""
MESSAGE_PUBLISHED: Final = "google.cloud.pubsub.topic.v1.messagePublished"
"""The CloudEvent type Eventarc delivers Pub/Sub messages as."""
_MAX_REASON_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class Event:
    """One event to publish to the engine: ``TriggerService.publish(topic, data, event_id)``."""

    topic: str
    data: Any
    event_id: str


class DeadLetter(Exception):
    """Raised when a pushed message can never be processed; acknowledge it and log why.

    The fields are safe to log: ids, the subscription and the reason, never the data.
    """

    def __init__(
        self, reason: str, *, message_id: str | None, subscription: str | None, shape: str
    ) -> None:
        self.reason = reason[:_MAX_REASON_CHARS]
        self.message_id = message_id
        self.subscription = subscription
        self.shape = shape
        super().__init__(f"{shape} message {message_id or '?'} dead-lettered: {self.reason}")

    def log_fields(self) -> dict[str, Any]:
        """Structured log extras (no payload)."""
        return {
            "message_id": self.message_id,
            "subscription": self.subscription,
            "shape": self.shape,
            "reason": self.reason,
        }


def log_dead_letter(exc: DeadLetter) -> None:
    """The dead-letter record: an ERROR naming the message and the reason, never the data."""
    log.error("event dead-lettered (acknowledged, not retried): %s", exc, extra=exc.log_fields())


class PubSubPushShape:
    """``{"message": {"data", "attributes", "messageId", "publishTime"}, "subscription"}``."""

    name: ClassVar[str] = "Pub/Sub push envelope"

    @classmethod
    def infer(cls, payload: Any) -> bool:
        """True for anything with a ``message`` object: a push subscription sent it."""
        return isinstance(payload, dict) and isinstance(payload.get("message"), dict)

    @classmethod
    def parse(cls, payload: dict[str, Any], *, topics: Mapping[str, str]) -> Event:
        """The event in the envelope.

        Raises:
            DeadLetter: the message can never be processed (see the module docstring).
        """
        subscription = payload.get("subscription")
        subscription = subscription if isinstance(subscription, str) else None
        return parse_pubsub_message(
            payload["message"],
            subscription=subscription,
            topic_id=None,
            topics=topics,
            shape=cls.name,
        )


class RelayEventShape:
    """Relay's own ``{"topic": str, "data": any JSON, "id": str}`` (local bus, by hand)."""

    name: ClassVar[str] = "Relay event"

    @classmethod
    def infer(cls, payload: Any) -> bool:
        """True for an object with a ``topic`` field."""
        return isinstance(payload, dict) and "topic" in payload

    @classmethod
    def parse(cls, payload: dict[str, Any], *, topics: Mapping[str, str]) -> Event:
        """The event; a malformed one is refused with 400 (its sender is not Pub/Sub).

        Raises:
            HttpError: a field is missing or malformed.
        """
        topic, data, event_id = parse_event(payload)
        return Event(topic=topic, data=data, event_id=event_id)


EVENT_SHAPES: Final = (PubSubPushShape, RelayEventShape)


def parse_pushed_event(body: bytes, *, topics: Mapping[str, str]) -> Event:
    """The event in a ``POST /v1/events`` body, whichever shape it has.

    Raises:
        HttpError: the body is not a JSON object, or matches no shape (400 naming the
            shapes tried), or is a malformed Relay event.
        DeadLetter: a Pub/Sub message that can never be processed.
    """
    payload = json_object(body, what="event")
    for shape in EVENT_SHAPES:
        if shape.infer(payload):
            return shape.parse(payload, topics=topics)
    tried = ", ".join(shape.name for shape in EVENT_SHAPES)
    raise HttpError(
        400,
        "malformed_event",
        f"the event matches none of the shapes this route accepts ({tried}); "
        "send a Pub/Sub push envelope or {'topic', 'data', 'id'}",
    )


def parse_cloud_event(
    *, event_type: str, source: str, event_id: str, data: Any, topics: Mapping[str, str]
) -> Event:
    """The event in an Eventarc ``messagePublished`` CloudEvent.

    Args:
        event_type: The CloudEvent ``type``.
        source: The CloudEvent ``source``: ``//pubsub.googleapis.com/projects/P/topics/T``.
        event_id: The CloudEvent ``id`` (Eventarc sets it to the message id).
        data: The CloudEvent data: ``{"message": {...}, "subscription": ...}``.
        topics: ``RELAY_PUBSUB_TOPICS``.

    Raises:
        DeadLetter: not a Pub/Sub event, or a message that can never be processed.
    """
    shape = "Eventarc Pub/Sub CloudEvent"
    if event_type != MESSAGE_PUBLISHED:
        raise DeadLetter(
            f"CloudEvent type {event_type[:80]!r} is not {MESSAGE_PUBLISHED}",
            message_id=event_id or None,
            subscription=None,
            shape=shape,
        )
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise DeadLetter(
            "CloudEvent data has no 'message' object",
            message_id=event_id or None,
            subscription=None,
            shape=shape,
        )
    subscription = data.get("subscription")
    _, _, topic_id = source.rpartition("/topics/")
    message = dict(data["message"])
    message.setdefault("messageId", event_id)
    return parse_pubsub_message(
        message,
        subscription=subscription if isinstance(subscription, str) else None,
        topic_id=topic_id or None,
        topics=topics,
        shape=shape,
    )


def parse_pubsub_message(
    message: Mapping[str, Any],
    *,
    subscription: str | None,
    topic_id: str | None,
    topics: Mapping[str, str],
    shape: str,
) -> Event:
    """Topic, decoded JSON data and message id of one Pub/Sub message.

    Raises:
        DeadLetter: no message id, no (valid) topic, or data that is not base64 JSON.
    """
    raw_id = message.get("messageId") or message.get("message_id")
    message_id = raw_id if isinstance(raw_id, str) and raw_id else None

    def dead(reason: str) -> DeadLetter:
        return DeadLetter(reason, message_id=message_id, subscription=subscription, shape=shape)

    if message_id is None:
        raise dead("message has no messageId")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise dead("message attributes are not an object")
    topic = _topic_of(attributes, subscription=subscription, topic_id=topic_id, topics=topics)
    if topic is None:
        raise dead(
            "no Relay topic: set the message attribute 'relay_topic' (or 'topic'), or map "
            "the subscription in RELAY_PUBSUB_TOPICS"
        )
    try:
        validate_topic(topic)
    except ValueError as exc:
        raise dead(str(exc)) from None
    return Event(topic=topic, data=_decoded_data(message.get("data"), dead), event_id=message_id)


def _topic_of(
    attributes: Mapping[str, Any],
    *,
    subscription: str | None,
    topic_id: str | None,
    topics: Mapping[str, str],
) -> str | None:
    for attribute in TOPIC_ATTRIBUTES:
        value = attributes.get(attribute)
        if isinstance(value, str) and value:
            return value
    subscription_id = subscription.rpartition("/")[2] if subscription else None
    for key in (subscription_id, subscription, topic_id):
        if key and key in topics:
            return topics[key]
    return topic_id


def _decoded_data(data: Any, dead: Callable[[str], DeadLetter]) -> Any:
    """The message data: base64 of UTF-8 JSON; absent or empty data is null."""
    if data is None or data == "":
        return None
    if not isinstance(data, str):
        raise dead("message data is not a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise dead("message data is not valid base64") from None
    try:
        return loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise dead("message data is not UTF-8 text") from None
    except JsonRefused as exc:  # repeated keys, NaN, deep nesting, numbers beyond 64 bits
        raise dead(f"message data {exc}") from None
    except ValueError as exc:
        # The decoder's message names a position, not the content.
        raise dead(f"message data is not JSON ({type(exc).__name__})") from None


# -- Cloud Scheduler -------------------------------------------------------------------


def is_schedule_time_given(body: bytes, headers: Mapping[str, str]) -> bool:
    """True when the invocation names its scheduled time (body or Cloud Scheduler header).

    Cloud Scheduler always sends ``X-CloudScheduler-ScheduleTime``, the same on every
    retry of one scheduled execution; a call without it (by hand, another scheduler)
    gets the latest time of the schedule's cron instead (``latest_fire_time``).
    """
    if any(key.lower() == SCHEDULE_TIME_HEADER.lower() for key in headers):
        return True
    if not body.strip():
        return False
    return json_object(body, what="schedule").get("scheduled_time") is not None


def latest_fire_time(schedules: Iterable[Schedule], *, name: str, now: float) -> float:
    """The latest time at or before ``now`` at which schedule ``name`` was due.

    Every call within one cron period maps to the same time, hence the same run. An
    unknown name returns ``now`` (starting it is refused as unknown anyway).
    """
    from zoneinfo import ZoneInfo

    from croniter import croniter

    for schedule in schedules:
        if schedule.name == name:
            zone = ZoneInfo(schedule.timezone)
            # croniter's get_prev is strictly before its start: nudge past an exact hit.
            start = datetime.fromtimestamp(now + 0.001, tz=UTC).astimezone(zone)
            moment: datetime = croniter(schedule.cron, start).get_prev(datetime)
            return moment.timestamp()
    return now
