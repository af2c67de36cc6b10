"""Starting runs from events and schedules, and resuming runs that wait for events.

An event starts at most one run per subscribed saga (the run id derives from the event
id), and a schedule at most one run per scheduled time, so Pub/Sub redelivery, SQS
duplicates and Cloud Scheduler retries never start a second run. An event also resumes
the runs waiting for it (``Saga.wait_for_event``): its correlation id names the run by
idempotency key or run id, and a step takes only the first event, so a redelivered
event resumes nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from core.domain.errors_text import Redactor, describe_exception
from core.domain.records import RunId
from core.domain.run_ids import RUN_ID_PATTERN, RunKey, run_id_for_client_key
from core.domain.saga import Saga
from core.domain.triggers import Schedule, topic_matches, validate_topic
from core.engine.runs import RunService, StartResult
from core.engine.saga_runner import SagaRunner
from core.errors import (
    ConfigurationError,
    EngineError,
    InputTooLargeError,
    InputValidationError,
    RequestRejected,
)
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
    resumed: list[str] = field(default_factory=list)
    """Run ids whose waiting step took the event (or keeps it until the run gets there)."""


class TriggerService:
    """Maps events and scheduled invocations to run starts."""

    def __init__(self, *, registry: SagaRegistry, runs: RunService, runner: SagaRunner) -> None:
        self._registry = registry
        self._runs = runs
        self._runner = runner

    def publish(self, *, topic: str, data: Any, event_id: str) -> EventOutcome:
        """Start a run of every saga subscribed to ``topic``; resume runs waiting for it.

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
        sagas = self._sagas()
        for saga in sagas:
            for trigger in saga.event_triggers:
                if not topic_matches(trigger.pattern, topic):
                    continue
                try:
                    result = self._runs.start_keyed(
                        saga.name, trigger.build_input(event), key=RunKey.event(event_id)
                    )
                except (InputValidationError, InputTooLargeError) as exc:
                    log.warning(
                        "event rejected by saga input model",
                        extra={"saga": saga.name, "topic": topic, "event_id": event_id},
                    )
                    rejected[saga.name] = str(exc)
                    continue
                except RequestRejected as exc:  # the store refuses this run (too large)
                    log.warning(
                        "event's run refused by the state store (not retried): %s",
                        exc,
                        extra={"saga": saga.name, "topic": topic, "event_id": event_id},
                    )
                    rejected[saga.name] = str(exc)
                    continue
                started.append(result)
                break  # one run per saga per event, even if two patterns match
        resumed = [
            run_id
            for saga in sagas
            for run_id in self._resume_waiting(saga, topic=topic, event=event)
        ]
        return EventOutcome(started, rejected, resumed)

    def _resume_waiting(self, saga: Saga, *, topic: str, event: dict[str, Any]) -> list[str]:
        resumed: list[str] = []
        for step in saga.event_waits:
            assert step.wait is not None and step.wait.topic is not None
            if not topic_matches(step.wait.topic, topic):
                continue
            try:
                correlation = step.wait.correlation(event)
            except Exception as exc:  # user code: a bad event must not fail the others
                detail = Redactor.for_values(event).redact(describe_exception(exc).detail)
                log.warning(
                    "correlation function failed; event not delivered to this step",
                    extra={"saga": saga.name, "step": step.name, "error": detail},
                )
                continue
            if not isinstance(correlation, str) or not correlation:
                continue
            for run_id in _runs_named_by(saga.name, correlation):
                outcome = self._runner.deliver_event(
                    saga=saga, run_id=run_id, step=step, data=event["data"]
                )
                if outcome is not None:
                    log.info(
                        "event delivered to a waiting step: %s",
                        outcome,
                        extra={"run_id": run_id, "step": step.name, "event_id": event["id"]},
                    )
                    resumed.append(run_id)
                    break
        return resumed

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
                key = RunKey.schedule(name, iso_utc(scheduled_at))
                return self._runs.start_keyed(saga.name, item.input, key=key)
        raise UnknownScheduleError(name=name, known=[s.name for _, s in self.schedules()])


def _runs_named_by(saga: str, correlation: str) -> list[RunId]:
    """The run a correlation id names: by client idempotency key first, else as a run id."""
    candidates = [run_id_for_client_key(saga, correlation)]
    if RUN_ID_PATTERN.match(correlation):
        candidates.append(RunId(correlation))
    return candidates
