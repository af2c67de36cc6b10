"""Cloud Monitoring metrics: step counts and latency distributions, written in batches.

``record_attempt`` and ``record_run`` only update in-memory aggregates under a lock; a
daemon thread writes them with ``CreateTimeSeries`` every ``interval_seconds`` (and on
``flush()`` / ``close()``), so no step ever waits for Cloud Monitoring and no Cloud
Monitoring error ever reaches the engine.

Why cumulative series: user-defined metrics accept GAUGE and CUMULATIVE kinds only (no
DELTA), and a cumulative point carries the whole count since ``start_time``. A write that
fails is therefore simply repeated by the next flush with newer totals, nothing is lost
and nothing is queued: memory is bounded by the number of label sets (``max_series``),
not by the number of observations or failed requests. Latency is a DISTRIBUTION with the
shared explicit buckets (``core.ports.metrics.LATENCY_BUCKET_BOUNDS_MS``), so Cloud
Monitoring's percentile aligners (``ALIGN_PERCENTILE_50/95/99``) work on it; count+sum
would only give a mean.

Series identity: several instances of a service write at once, and two writers of one
cumulative series with different start times corrupt it, so every process is its own
``generic_task`` (``namespace`` = ``K_SERVICE``, ``job`` = ``K_REVISION``, ``task_id`` =
a random id per process), as OpenTelemetry's Google exporter maps Cloud Run. Custom
metrics cannot be written against ``cloud_run_revision``. Queries aggregate over
``task_id``.

Limits honoured: at most 200 series per request, at most one point per series every
5 seconds (an explicit ``flush()`` holds back series written less than 5 s ago; ``close()``
waits for them, at most 5 s). ``google.cloud.monitoring_v3`` (about 0.5 s to import) and
grpc are imported by the flushing thread on the first write, never at cold start.

Cloud Run caveat: with request-based billing (the default), an instance gets CPU only
while it serves a request, so the thread's writes may wait for the next request; the
totals are cumulative, so nothing is lost, but points can arrive late. Deploy the worker
with instance-based billing (``--no-cpu-throttling``) where timely metrics matter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from core.ports.metrics import (
    LATENCY_BUCKET_BOUNDS_MS,
    RUNS_FINISHED,
    STEP_ATTEMPTS,
    STEP_LATENCY,
    MetricDefinition,
    MetricKind,
)

if TYPE_CHECKING:
    from google.cloud.monitoring_v3 import MetricServiceClient

log = logging.getLogger("relay.metrics")

METRIC_TYPE_PREFIX: Final = "custom.googleapis.com/"
RESOURCE_TYPE: Final = "generic_task"
MAX_SERIES_PER_REQUEST: Final = 200
"""Cloud Monitoring's limit of time series in one ``CreateTimeSeries`` request."""
MIN_POINT_INTERVAL_SECONDS: Final = 5.0
"""Cloud Monitoring rejects a point written sooner than this after the previous one."""
FLUSH_INTERVAL_SECONDS: Final = 60.0
MAX_SERIES: Final = 2_000
"""Label sets kept per process; observations of new label sets beyond it are dropped."""

ClientFactory = Callable[[], "MetricServiceClient"]


class _Distribution:
    """Count, mean, sum of squared deviations (Welford) and bucket counts of latencies."""

    __slots__ = ("bucket_counts", "count", "mean", "squared_deviation")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.squared_deviation = 0.0
        self.bucket_counts = [0] * (len(LATENCY_BUCKET_BOUNDS_MS) + 1)

    def add(self, value_ms: float) -> None:
        self.count += 1
        delta = value_ms - self.mean
        self.mean += delta / self.count
        self.squared_deviation += delta * (value_ms - self.mean)
        self.bucket_counts[_bucket_index(value_ms)] += 1

    def as_dict(self) -> dict[str, Any]:
        """The ``google.api.Distribution`` fields (a copy: safe to send outside the lock)."""
        return {
            "count": self.count,
            "mean": self.mean,
            "sum_of_squared_deviation": self.squared_deviation,
            "bucket_options": {"explicit_buckets": {"bounds": list(LATENCY_BUCKET_BOUNDS_MS)}},
            "bucket_counts": list(self.bucket_counts),
        }


def _bucket_index(value_ms: float) -> int:
    """Bucket i holds values in [bounds[i-1], bounds[i]); the last is the overflow."""
    for index, bound in enumerate(LATENCY_BUCKET_BOUNDS_MS):
        if value_ms < bound:
            return index
    return len(LATENCY_BUCKET_BOUNDS_MS)


@dataclass(slots=True)
class _Series:
    """The running total of one metric and label set, and when it was last written."""

    definition: MetricDefinition
    labels: tuple[str, ...]
    count: int = 0
    distribution: _Distribution | None = None
    is_dirty: bool = False
    written_at: float | None = None  # monotonic seconds of the last successful write

    def value(self) -> dict[str, Any]:
        if self.distribution is not None:
            return {"distribution_value": self.distribution.as_dict()}
        return {"int64_value": self.count}


@dataclass(frozen=True, slots=True)
class _Batch:
    """What one flush sends: a copy of each due series' value, taken under the lock."""

    series: list[tuple[_Series, dict[str, Any]]] = field(default_factory=list)
    next_due_at: float | None = None  # when the series held back by the 5 s rule are due


class CloudMonitoringMetrics:
    """A ``MetricsSink`` writing ``custom.googleapis.com/relay/...`` time series.

    Args:
        project: The project the metrics are written to.
        client_factory: Builds the ``MetricServiceClient``; called once, by the first
            flush (tests pass a client on an insecure channel to a local gRPC server).
        resource_labels: The ``generic_task`` labels (``from_settings`` derives them).
        interval_seconds: How often the daemon thread writes.
        min_point_interval_seconds: The least time between two points of one series.
        max_series: Label sets kept; new ones beyond it are dropped with a warning.
        monotonic: Clock for the 5 s rule (tests control it).
    """

    def __init__(
        self,
        *,
        project: str,
        client_factory: ClientFactory | None = None,
        resource_labels: Mapping[str, str] | None = None,
        interval_seconds: float = FLUSH_INTERVAL_SECONDS,
        min_point_interval_seconds: float = MIN_POINT_INTERVAL_SECONDS,
        max_series: int = MAX_SERIES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._project = project
        self._client_factory = client_factory or _default_client
        self._client: MetricServiceClient | None = None
        self._resource_labels = dict(
            resource_labels or default_resource_labels(project=project, environ={})
        )
        self._interval_seconds = interval_seconds
        self._min_point_interval_seconds = min_point_interval_seconds
        self._max_series = max_series
        self._monotonic = monotonic
        # Cumulative points count from here; end times are always later than this.
        self._start_seconds = time.time()
        self._series: dict[tuple[str, tuple[str, ...]], _Series] = {}
        self._lock = threading.Lock()  # guards _series; held for microseconds
        self._flush_lock = threading.Lock()  # one flush at a time (thread, flush, close)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._is_closed = False
        self._dropped_warned = False

    @classmethod
    def from_settings(
        cls, *, project: str, environ: Mapping[str, str] | None = None
    ) -> CloudMonitoringMetrics:
        """A sink for ``project`` with the resource labels of this Cloud Run instance."""
        env = os.environ if environ is None else environ
        return cls(project=project, resource_labels=default_resource_labels(project, env))

    def describe(self) -> Mapping[str, str]:
        """Where the metrics go, for startup logs and error messages."""
        return {
            "metrics": "cloud_monitoring",
            "project": self._project,
            "resource": RESOURCE_TYPE,
            **{f"resource.{k}": v for k, v in self._resource_labels.items()},
        }

    # -- MetricsSink ------------------------------------------------------------------

    def record_attempt(
        self, *, saga: str, step: str, action: str, outcome: str, duration_seconds: float
    ) -> None:
        """Count the attempt and add its latency to the distribution (no I/O)."""
        labels = (saga, step, action, outcome)
        try:
            with self._lock:
                counter = self._series_for(STEP_ATTEMPTS, labels)
                latency = self._series_for(STEP_LATENCY, labels)
                if counter is not None:
                    counter.count += 1
                    counter.is_dirty = True
                if latency is not None and latency.distribution is not None:
                    latency.distribution.add(max(0.0, duration_seconds * 1000.0))
                    latency.is_dirty = True
            self._ensure_thread()
        except Exception:  # a metrics bug must never fail a step
            log.exception("metrics: could not record an attempt")

    def record_run(self, *, saga: str, status: str) -> None:
        """Count a run that became terminal (no I/O)."""
        try:
            with self._lock:
                series = self._series_for(RUNS_FINISHED, (saga, status))
                if series is not None:
                    series.count += 1
                    series.is_dirty = True
            self._ensure_thread()
        except Exception:
            log.exception("metrics: could not record a run")

    # -- flushing ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write every changed series now, except those written less than 5 s ago.

        Never raises: a failed write is logged and its series are written again, with
        newer totals, by the next flush.
        """
        with self._flush_lock:
            self._flush_due()

    def close(self) -> None:
        """Stop the thread and write what is left (waiting out the 5 s rule, at most 5 s)."""
        if self._is_closed:
            return
        self._is_closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self._interval_seconds + 15.0)
        with self._flush_lock:
            next_due_at = self._flush_due()
            if next_due_at is not None:
                time.sleep(
                    min(max(0.0, next_due_at - self._monotonic()), MIN_POINT_INTERVAL_SECONDS)
                )
                self._flush_due(is_final=True)
            client, self._client = self._client, None
        if client is not None:
            try:
                client.transport.close()  # type: ignore[no-untyped-call]
            except Exception:
                log.debug("metrics: closing the Cloud Monitoring client failed", exc_info=True)

    def _ensure_thread(self) -> None:
        """Start the flushing thread on the first observation (never at import)."""
        if self._thread is not None or self._is_closed:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="relay-metrics-flush", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_seconds):
            self.flush()

    def _series_for(self, definition: MetricDefinition, labels: tuple[str, ...]) -> _Series | None:
        """The series of ``labels`` (created on first use), or None past ``max_series``."""
        key = (definition.name, labels)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self._max_series:
                if not self._dropped_warned:
                    self._dropped_warned = True
                    log.warning(
                        "metrics: more than %d label sets; dropping new ones",
                        self._max_series,
                        extra={"metric": definition.name},
                    )
                return None
            series = _Series(definition=definition, labels=labels)
            if definition.kind is MetricKind.LATENCY:
                series.distribution = _Distribution()
            self._series[key] = series
        return series

    def _flush_due(self, *, is_final: bool = False) -> float | None:
        """Write the due series in requests of at most 200; when the held-back are due.

        ``is_final``: the caller waited out the minimum interval; write every changed series.
        """
        batch = self._take_due(is_final=is_final)
        if not batch.series:
            return batch.next_due_at
        client = self._get_client()
        if client is None:
            self._mark_dirty([series for series, _ in batch.series])
            return batch.next_due_at
        end_seconds = max(time.time(), self._start_seconds + 0.001)
        for offset in range(0, len(batch.series), MAX_SERIES_PER_REQUEST):
            chunk = batch.series[offset : offset + MAX_SERIES_PER_REQUEST]
            try:
                _write(client, self._project, self._time_series(chunk, end_seconds))
            except Exception as exc:
                log.warning(
                    "metrics: CreateTimeSeries failed (%s: %s); %d series kept for the next flush",
                    type(exc).__name__,
                    exc,
                    len(chunk),
                    extra={"project": self._project},
                )
                self._mark_dirty([series for series, _ in chunk])
                continue
            written_at = self._monotonic()
            with self._lock:
                for series, _ in chunk:
                    series.written_at = written_at
        return batch.next_due_at

    def _take_due(self, *, is_final: bool) -> _Batch:
        now = self._monotonic()
        due: list[tuple[_Series, dict[str, Any]]] = []
        next_due_at: float | None = None
        with self._lock:
            for series in self._series.values():
                if not series.is_dirty:
                    continue
                if series.written_at is not None and not is_final:
                    ready_at = series.written_at + self._min_point_interval_seconds
                    if ready_at > now:
                        next_due_at = (
                            ready_at if next_due_at is None else min(next_due_at, ready_at)
                        )
                        continue
                series.is_dirty = False
                due.append((series, series.value()))
        return _Batch(series=due, next_due_at=next_due_at)

    def _mark_dirty(self, series: list[_Series]) -> None:
        with self._lock:
            for one in series:
                one.is_dirty = True

    def _get_client(self) -> MetricServiceClient | None:
        """The client, built by the first flush; None (logged) when it cannot be built."""
        if self._client is None:
            try:
                self._client = self._client_factory()
            except Exception as exc:
                log.warning(
                    "metrics: cannot create the Cloud Monitoring client (%s: %s)",
                    type(exc).__name__,
                    exc,
                    extra={"project": self._project},
                )
                return None
        return self._client

    def _time_series(
        self, chunk: list[tuple[_Series, dict[str, Any]]], end_seconds: float
    ) -> list[dict[str, Any]]:
        """``TimeSeries`` messages (as dicts proto-plus accepts) for one request."""
        interval = {
            "start_time": _timestamp(self._start_seconds),
            "end_time": _timestamp(end_seconds),
        }
        result = []
        for series, value in chunk:
            definition = series.definition
            result.append(
                {
                    "metric": {
                        "type": METRIC_TYPE_PREFIX + definition.name,
                        "labels": dict(zip(definition.labels, series.labels, strict=True)),
                    },
                    "resource": {"type": RESOURCE_TYPE, "labels": dict(self._resource_labels)},
                    "metric_kind": "CUMULATIVE",
                    "value_type": (
                        "DISTRIBUTION" if definition.kind is MetricKind.LATENCY else "INT64"
                    ),
                    "unit": definition.unit,
                    "points": [{"interval": interval, "value": value}],
                }
            )
        return result


def default_resource_labels(project: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``generic_task`` labels for this process: service, revision and a per-process id.

    ``K_SERVICE`` and ``K_REVISION`` are set by Cloud Run; ``location`` is the region
    when ``GOOGLE_CLOUD_REGION`` names it, else ``global``.
    """
    service = environ.get("K_SERVICE") or "relay"
    return {
        "project_id": project,
        "location": environ.get("GOOGLE_CLOUD_REGION") or "global",
        "namespace": service,
        "job": environ.get("K_REVISION") or service,
        "task_id": uuid.uuid4().hex[:16],
    }


def _timestamp(seconds: float) -> dict[str, int]:
    whole = int(seconds)
    return {"seconds": whole, "nanos": int((seconds - whole) * 1e9)}


def _write(client: MetricServiceClient, project: str, series: list[dict[str, Any]]) -> None:
    from google.cloud import monitoring_v3

    client.create_time_series(
        request=monitoring_v3.CreateTimeSeriesRequest(
            name=f"projects/{project}",
            time_series=[monitoring_v3.TimeSeries(one) for one in series],
        )
    )


def _default_client() -> MetricServiceClient:
    """The production client (Application Default Credentials), imported on first use."""
    from google.cloud import monitoring_v3

    return monitoring_v3.MetricServiceClient()
