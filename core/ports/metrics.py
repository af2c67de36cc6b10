"""The metrics port: counts and latencies of step attempts, kept off the hot path.

The metric names, units and labels below are shared by every adapter, so a dashboard or
alert reads the same names on Cloud Monitoring (``custom.googleapis.com/relay/...``) and
on CloudWatch (EMF, namespace ``Relay``):

===================  ==========  =================================  =========================
name                 unit        labels                             meaning
===================  ==========  =================================  =========================
relay/step_attempts  count       saga, step, action, outcome        attempts that finished
relay/step_latency   ms          saga, step, action, outcome        duration of one attempt
relay/runs_finished  count       saga, status                       runs that became terminal
===================  ==========  =================================  =========================

``action`` is ``execute`` or ``compensate``; ``outcome`` is ``succeeded``, ``failed``
(retryable) or ``rejected`` (permanent); ``status`` is a terminal run status.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol


class MetricKind(StrEnum):
    """How an adapter aggregates a metric's observations."""

    COUNT = "count"
    """A monotonically growing number of events."""
    LATENCY = "latency"
    """A distribution of durations (percentiles are read from it)."""


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """One metric every adapter writes under the same name, unit and labels.

    Attributes:
        name: The cloud-neutral name (``relay/...``); adapters prefix it as their
            platform requires.
        kind: Count or latency distribution.
        unit: ``1`` for counts, ``ms`` for latencies (UCUM, as Cloud Monitoring expects).
        labels: The label (dimension) keys, in a fixed order.
        description: One sentence for metric descriptors and dashboards.
    """

    name: str
    kind: MetricKind
    unit: str
    labels: tuple[str, ...]
    description: str


STEP_ATTEMPTS: Final = MetricDefinition(
    name="relay/step_attempts",
    kind=MetricKind.COUNT,
    unit="1",
    labels=("saga", "step", "action", "outcome"),
    description="Attempts of saga steps and compensations that finished, by outcome.",
)
STEP_LATENCY: Final = MetricDefinition(
    name="relay/step_latency",
    kind=MetricKind.LATENCY,
    unit="ms",
    labels=("saga", "step", "action", "outcome"),
    description="Duration of one attempt of a step or compensation, in milliseconds.",
)
RUNS_FINISHED: Final = MetricDefinition(
    name="relay/runs_finished",
    kind=MetricKind.COUNT,
    unit="1",
    labels=("saga", "status"),
    description="Runs that reached a terminal status.",
)
ALL_METRICS: Final = (STEP_ATTEMPTS, STEP_LATENCY, RUNS_FINISHED)

LATENCY_BUCKET_BOUNDS_MS: Final = (
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    900_000.0,
)
"""Upper bounds of the latency histogram buckets (a 1-2.5-5 series from 1 ms to 15 min).

Fine enough for a p50 of a no-op step (about 1 ms) and coarse enough for a step that
runs for minutes; an adapter that aggregates uses these bounds so percentiles agree.
"""


class MetricsSink(Protocol):
    """Receives one observation per finished attempt and per run outcome.

    Adapters must not block the caller on network I/O (buffer and flush in batches, or
    write log lines such as CloudWatch EMF); a failing sink must never fail a step, so
    neither method raises.
    """

    def record_attempt(
        self, *, saga: str, step: str, action: str, outcome: str, duration_seconds: float
    ) -> None:
        """One attempt of a step or compensation finished with ``outcome``."""
        ...

    def record_run(self, *, saga: str, status: str) -> None:
        """A run reached terminal ``status``."""
        ...


class BufferedMetricsSink(MetricsSink, Protocol):
    """A sink the composition root owns: it may hold observations until written.

    ``flush()`` writes what is buffered now (an invocation about to be frozen calls it);
    ``close()`` flushes and releases threads and connections. Neither raises.
    """

    def flush(self) -> None:
        """Write buffered observations now."""
        ...

    def close(self) -> None:
        """Flush, then release threads and connections."""
        ...


class NullMetrics:
    """Discards every observation (the default when no sink is configured)."""

    def record_attempt(
        self, *, saga: str, step: str, action: str, outcome: str, duration_seconds: float
    ) -> None:
        """Ignore the observation."""

    def record_run(self, *, saga: str, status: str) -> None:
        """Ignore the observation."""

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""
