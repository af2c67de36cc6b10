"""Queue settings declared in code: retry and rate limits of the queue carrying a saga's steps.

A saga names its queue (``Saga("order", queue="relay-steps")``) and may declare how that
queue behaves::

    Saga("order", queue="orders", queue_settings=QueueSettings(max_dispatches_per_second=50))

``relay manifest`` publishes the settings and Terraform creates the queue with them (a
Cloud Tasks queue's ``rate_limits`` and ``retry_config``; an SQS queue's visibility
timeout and dead-letter redrive). These are the *queue's* redeliveries, for deliveries
answered "retry later" (a held lease, an unavailable store); a step's own retries are
its ``RetryPolicy``, delivered by the engine as delayed messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import DefinitionError

MAX_DISPATCHES_PER_SECOND = 500.0
"""Cloud Tasks' highest ``max_dispatches_per_second``."""
MAX_CONCURRENT_DISPATCHES = 5000
"""Cloud Tasks' highest ``max_concurrent_dispatches``."""
MAX_VISIBILITY_TIMEOUT_SECONDS = 12 * 3600
"""SQS's longest visibility timeout."""
MAX_RECEIVE_COUNT = 1000
"""SQS's highest redrive ``maxReceiveCount``."""


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise DefinitionError(f"queue settings: {name}={value!r} is outside [{low:g}, {high:g}]")


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """How the queue that carries a saga's step messages dispatches and redelivers them.

    Attributes:
        max_dispatches_per_second: Cloud Tasks rate limit (at most 500).
        max_concurrent_dispatches: Cloud Tasks deliveries in flight (at most 5000).
        max_attempts: Cloud Tasks deliveries of one message before it is dropped.
        min_backoff_seconds: Cloud Tasks wait before the first redelivery.
        max_backoff_seconds: Cloud Tasks longest wait between redeliveries.
        visibility_timeout_seconds: SQS hides a received message this long; it must be at
            least the worker's timeout (an event source mapping refuses less).
        dlq_max_receive_count: SQS receives of one message before it moves to the
            dead-letter queue.
    """

    max_dispatches_per_second: float = 500.0
    max_concurrent_dispatches: int = 1000
    max_attempts: int = 100
    min_backoff_seconds: int = 1
    max_backoff_seconds: int = 600
    visibility_timeout_seconds: int = 960
    dlq_max_receive_count: int = 5

    def __post_init__(self) -> None:
        _check_range(
            "max_dispatches_per_second",
            self.max_dispatches_per_second,
            0.001,
            MAX_DISPATCHES_PER_SECOND,
        )
        _check_range(
            "max_concurrent_dispatches",
            self.max_concurrent_dispatches,
            1,
            MAX_CONCURRENT_DISPATCHES,
        )
        _check_range("max_attempts", self.max_attempts, 1, 10_000)
        _check_range("min_backoff_seconds", self.min_backoff_seconds, 0, 3600)
        _check_range("max_backoff_seconds", self.max_backoff_seconds, 0, 3600)
        if self.max_backoff_seconds < self.min_backoff_seconds:
            raise DefinitionError(
                f"queue settings: max_backoff_seconds ({self.max_backoff_seconds}) is less "
                f"than min_backoff_seconds ({self.min_backoff_seconds})"
            )
        _check_range(
            "visibility_timeout_seconds",
            self.visibility_timeout_seconds,
            0,
            MAX_VISIBILITY_TIMEOUT_SECONDS,
        )
        _check_range("dlq_max_receive_count", self.dlq_max_receive_count, 1, MAX_RECEIVE_COUNT)


DEFAULT_QUEUE_SETTINGS = QueueSettings()
"""What a queue gets when no saga on it declares settings."""
