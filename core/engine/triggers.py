"""Starting runs from events and schedules, idempotently.

An event starts at most one run per subscribed saga (the run id derives from the event
id), and a schedule at most one run per scheduled time, so Pub/Sub redelivery, SQS
duplicates and Cloud Scheduler retries never start a second run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.domain.saga import Saga
from core.domain.triggers import Schedule, topic_matches, validate_topic
from core.engine.runs import RunService, StartResult
from core.errors import ConfigurationError, EngineError, InputValidationError
from core.registry import SagaRegistry
from core.scheduling import iso_utc

log = logging.getLogger("relay.triggers")


class UnknownScheduleError(EngineError):
    """Raised when a scheduled invocation names a schedule this bundle does not declare."""

    def __init__(self, *, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown schedule {name!r}; this bundle declares: {', '.join(known) or 'none'}"
        )


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """The runs an event started (or found already started) and the sagas that rejected it."""

    started: list[StartResult]
    rejected: dict[str, str]


class TriggerService:
    """Maps events and scheduled invocations to run starts."""

    def __init__(self, *, registry: SagaRegistry, runs: RunService) -> None:
        self._registry = registry
        self._runs = runs

    def publish(self, *, topic: str, data: Any, event_id: str) -> EventOutcome:
        """Start a run of every saga subscribed to ``topic``.

        Input the saga rejects is not retried (it would fail the same way): it is logged
        and reported in ``rejected`` so the caller can acknowledge and dead-letter it.

        Raises:
            ValueError: ``topic`` or ``event_id`` is malformed.
        """
        validate_topic(topic)
        if not event_id:
            raise ValueError("event id must be a non-empty string")
        event = {"topic": topic, "data": data, "id": event_id}
        started: list[StartResult] = []
        rejected: dict[str, str] = {}
        for saga in self._sagas():
            for trigger in saga.event_triggers:
                if not topic_matches(trigger.pattern, topic):
                    continue
                try:
                    result = self._runs.start(
                        saga.name, trigger.build_input(event), idempotency_key=f"event:{event_id}"
                    )
                except InputValidationError as exc:
                    log.warning(
                        "event rejected by saga input model",
                        extra={"saga": saga.name, "topic": topic, "event_id": event_id},
                    )
                    rejected[saga.name] = str(exc)
                    continue
                started.append(result)
                break  # one run per saga per event, even if two patterns match
        return EventOutcome(started, rejected)

    def schedules(self) -> list[tuple[Saga, Schedule]]:
        """Every schedule of every saga this process serves."""
        return [(saga, item) for saga in self._sagas() for item in saga.schedules]

    def _sagas(self) -> list[Saga]:
        """Every saga that imports; one broken module must not stop unrelated triggers."""
        sagas: list[Saga] = []
        for name in self._registry.names():
            try:
                sagas.append(self._registry.get(name))
            except ConfigurationError as exc:
                log.error("saga %s cannot be loaded; its triggers are skipped: %s", name, exc)
        return sagas

    def fire_schedule(self, *, name: str, scheduled_at: float) -> StartResult:
        """Start the run for one scheduled time of schedule ``name`` (idempotent).

        Raises:
            UnknownScheduleError: no schedule of that name.
        """
        for saga, item in self.schedules():
            if item.name == name:
                key = f"schedule:{name}:{iso_utc(scheduled_at)}"
                return self._runs.start(saga.name, item.input, idempotency_key=key)
        raise UnknownScheduleError(name=name, known=[s.name for _, s in self.schedules()])
