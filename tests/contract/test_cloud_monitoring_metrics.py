"""CloudMonitoringMetrics over a real gRPC connection to a local MetricService server.

There is no Cloud Monitoring emulator; the test serves ``CreateTimeSeries`` itself on
127.0.0.1 and the adapter talks to it through the real client and transport, so what
is asserted is what would go over the wire.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
monitoring_v3 = pytest.importorskip("google.cloud.monitoring_v3")

from google.api import metric_pb2  # noqa: E402

from core.ports.metrics import LATENCY_BUCKET_BOUNDS_MS  # noqa: E402
from tests.support.monitoring import PROJECT, MetricServer, make_sink  # noqa: E402


def by_type(series: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    return {(one.metric.type, tuple(sorted(one.metric.labels.items()))): one for one in series}


def attempt_labels(outcome: str = "succeeded") -> tuple[tuple[str, str], ...]:
    labels = {"saga": "order", "step": "charge", "action": "execute", "outcome": outcome}
    return tuple(sorted(labels.items()))


def test_recording_makes_no_rpc_and_flush_writes_counts_and_distributions(
    metric_server: MetricServer,
) -> None:
    """Observations stay in memory until flush, which writes cumulative counts and latencies."""
    sink = make_sink(metric_server)
    sink.record_attempt(
        saga="order", step="charge", action="execute", outcome="succeeded", duration_seconds=0.004
    )
    sink.record_attempt(
        saga="order", step="charge", action="execute", outcome="succeeded", duration_seconds=0.2
    )
    sink.record_attempt(
        saga="order", step="charge", action="execute", outcome="failed", duration_seconds=0.05
    )
    sink.record_run(saga="order", status="COMPLETED")
    assert metric_server.requests == []

    sink.flush()

    assert len(metric_server.requests) == 1
    request = metric_server.requests[0]
    assert request.name == f"projects/{PROJECT}"
    series = by_type(list(request.time_series))
    assert len(series) == 5
    attempts = series[("custom.googleapis.com/relay/step_attempts", attempt_labels())]
    assert attempts.metric_kind == metric_pb2.MetricDescriptor.MetricKind.CUMULATIVE
    assert attempts.value_type == metric_pb2.MetricDescriptor.ValueType.INT64
    assert attempts.points[0].value.int64_value == 2
    assert attempts.resource.type == "generic_task"
    assert attempts.resource.labels["namespace"] == "relay-worker"
    assert attempts.resource.labels["task_id"] == "instance-1"
    failed = series[("custom.googleapis.com/relay/step_attempts", attempt_labels("failed"))]
    assert failed.points[0].value.int64_value == 1

    latency = series[("custom.googleapis.com/relay/step_latency", attempt_labels())]
    assert latency.unit == "ms"
    distribution = latency.points[0].value.distribution_value
    assert distribution.count == 2
    assert distribution.mean == pytest.approx(102.0)
    assert list(distribution.bucket_options.explicit_buckets.bounds) == list(
        LATENCY_BUCKET_BOUNDS_MS
    )
    assert sum(distribution.bucket_counts) == 2
    assert distribution.bucket_counts[2] == 1  # 4 ms: [2.5, 5)
    assert distribution.bucket_counts[7] == 1  # 200 ms: [100, 250)

    runs = series[
        (
            "custom.googleapis.com/relay/runs_finished",
            (("saga", "order"), ("status", "COMPLETED")),
        )
    ]
    assert runs.points[0].value.int64_value == 1
    interval = runs.points[0].interval
    assert interval.end_time > interval.start_time
    sink.close()


def test_totals_are_cumulative_and_only_changed_series_are_rewritten(
    metric_server: MetricServer,
) -> None:
    """A second flush sends the running total of the series that changed, and only those."""
    sink = make_sink(metric_server)
    sink.record_run(saga="order", status="COMPLETED")
    sink.record_run(saga="order", status="COMPENSATED")
    sink.flush()
    sink.record_run(saga="order", status="COMPLETED")
    sink.flush()
    sink.flush()  # nothing changed: no request

    assert len(metric_server.requests) == 2
    (second,) = metric_server.requests[1].time_series
    assert second.metric.labels["status"] == "COMPLETED"
    assert second.points[0].value.int64_value == 2
    sink.close()


def test_at_most_200_series_per_request(metric_server: MetricServer) -> None:
    """450 label sets go out in requests of 200, 200 and 50."""
    sink = make_sink(metric_server)
    for index in range(450):
        sink.record_run(saga=f"saga-{index}", status="COMPLETED")
    sink.flush()

    assert [len(request.time_series) for request in metric_server.requests] == [200, 200, 50]
    assert len({one.metric.labels["saga"] for one in metric_server.series()}) == 450
    sink.close()


def test_a_failing_server_never_raises_and_the_totals_are_sent_later(
    metric_server: MetricServer,
) -> None:
    """An error status is logged, not raised; the next flush sends the grown totals."""
    metric_server.failure = grpc.StatusCode.PERMISSION_DENIED
    sink = make_sink(metric_server)
    sink.record_run(saga="order", status="COMPLETED")
    sink.flush()  # must not raise
    sink.record_run(saga="order", status="COMPLETED")
    assert len(metric_server.requests) == 1

    metric_server.failure = None
    sink.flush()

    assert len(metric_server.requests) == 2
    (series,) = metric_server.requests[1].time_series
    assert series.points[0].value.int64_value == 2
    sink.close()


def test_an_unreachable_server_never_raises(metric_server: MetricServer) -> None:
    """With the server gone, recording and flushing still return normally."""
    metric_server.stop()
    sink = make_sink(metric_server)
    sink.record_attempt(
        saga="order", step="charge", action="execute", outcome="succeeded", duration_seconds=0.01
    )
    sink.flush()
    sink.close()


def test_a_series_written_less_than_5_seconds_ago_waits(metric_server: MetricServer) -> None:
    """Flush holds back a series written within the minimum interval; close waits for it."""
    now = [1000.0]
    sink = make_sink(metric_server, min_point_interval_seconds=0.2, monotonic=lambda: now[0])
    sink.record_run(saga="order", status="COMPLETED")
    sink.flush()
    sink.record_run(saga="order", status="COMPLETED")
    sink.flush()
    assert len(metric_server.requests) == 1

    now[0] += 0.2
    sink.flush()
    assert len(metric_server.requests) == 2
    sink.record_run(saga="order", status="COMPLETED")
    now[0] += 0.1  # still held back: close must wait and then write it
    sink.close()
    assert len(metric_server.requests) == 3
    (last,) = metric_server.requests[2].time_series
    assert last.points[0].value.int64_value == 3


def test_the_daemon_thread_writes_in_the_background(metric_server: MetricServer) -> None:
    """Without any flush call, the thread writes the observations after its interval."""
    sink = make_sink(metric_server, interval_seconds=0.1)
    started = time.perf_counter()
    sink.record_attempt(
        saga="order", step="ship", action="compensate", outcome="rejected", duration_seconds=1.5
    )
    assert time.perf_counter() - started < 0.05  # no RPC on the caller's path

    metric_server.wait_for(1)
    types = {one.metric.type for one in metric_server.series()}
    assert types == {
        "custom.googleapis.com/relay/step_attempts",
        "custom.googleapis.com/relay/step_latency",
    }
    sink.close()


def test_new_label_sets_beyond_the_limit_are_dropped(metric_server: MetricServer) -> None:
    """Memory stays bounded: past max_series, observations of new label sets are dropped."""
    sink = make_sink(metric_server, max_series=3)
    for index in range(5):
        sink.record_run(saga=f"saga-{index}", status="COMPLETED")
    sink.flush()

    assert len(metric_server.series()) == 3
    sink.close()
