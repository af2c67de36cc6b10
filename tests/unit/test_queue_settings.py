"""Queue settings declared in code: defaults, validation, and the saga that carries them."""

from __future__ import annotations

import dataclasses

import pytest

from core import QueueSettings, Saga
from core.domain.queues import DEFAULT_QUEUE_SETTINGS
from core.errors import DefinitionError


def test_a_saga_without_queue_settings_keeps_its_queue_name() -> None:
    """``Saga(queue="name")`` still works and declares no settings."""
    saga = Saga("plain", queue="bulk")

    assert saga.queue == "bulk"
    assert saga.queue_settings is None


def test_a_saga_carries_the_settings_of_its_queue() -> None:
    """Settings given to a saga are kept as declared, the rest at their defaults."""
    settings = QueueSettings(max_dispatches_per_second=20, max_attempts=7)
    saga = Saga("throttled", queue="slow", queue_settings=settings)

    assert saga.queue_settings == settings
    assert settings.max_concurrent_dispatches == DEFAULT_QUEUE_SETTINGS.max_concurrent_dispatches


def test_queue_settings_are_frozen_values() -> None:
    """Two equal declarations compare equal and cannot be changed after the fact."""
    assert QueueSettings() == DEFAULT_QUEUE_SETTINGS
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_QUEUE_SETTINGS.max_attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_dispatches_per_second", 0),
        ("max_dispatches_per_second", 501),
        ("max_concurrent_dispatches", 5001),
        ("max_attempts", 0),
        ("min_backoff_seconds", -1),
        ("visibility_timeout_seconds", 12 * 3600 + 1),
        ("dlq_max_receive_count", 0),
    ],
)
def test_queue_settings_outside_the_cloud_limits_are_refused(field: str, value: float) -> None:
    """A value no Cloud Tasks or SQS queue accepts fails at definition, naming the field."""
    with pytest.raises(DefinitionError, match=field):
        QueueSettings(**{field: value})  # type: ignore[arg-type]


def test_a_backoff_range_must_not_be_inverted() -> None:
    """``max_backoff_seconds`` below ``min_backoff_seconds`` is a definition error."""
    with pytest.raises(DefinitionError, match="max_backoff_seconds"):
        QueueSettings(min_backoff_seconds=10, max_backoff_seconds=5)
