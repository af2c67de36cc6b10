"""The engine's observations reach both metric sinks under the shared names and labels."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from core import RetryPolicy, Saga, StepContext
from core.ports.metrics import MetricsSink
from infra.aws.emf import EmfMetrics
from infra.memory.harness import memory_harness

FAST = RetryPolicy(max_attempts=3, initial_delay_seconds=1.0, jitter=0.0)


def flaky_saga() -> Saga:
    """reserve -> charge (fails once, then succeeds) -> ship."""
    saga = Saga("shop")
    failures = {"charge": 1}

    def make(step: str) -> None:
        def action(ctx: StepContext) -> dict[str, Any]:
            if failures.get(step, 0) > 0:
                failures[step] -= 1
                raise RuntimeError(f"{step} broke")
            return {"step": step}

        saga.step(action, name=step, retry=FAST, timeout_seconds=5)

    for step in ("reserve", "charge", "ship"):
        make(step)
    return saga


def run_with(sink: MetricsSink) -> str:
    harness = memory_harness([flaky_saga()], metrics=sink)
    try:
        started = harness.engine.runs.start("shop", {})
        harness.pump()
        return harness.engine.runs.get(started.run.run_id).run.status.value
    finally:
        harness.close()


EXPECTED_ATTEMPTS = Counter(
    {
        ("shop", "reserve", "execute", "succeeded"): 1,
        ("shop", "charge", "execute", "failed"): 1,
        ("shop", "charge", "execute", "succeeded"): 1,
        ("shop", "ship", "execute", "succeeded"): 1,
    }
)


def test_emf_lines_count_every_attempt_and_the_finished_run() -> None:
    """A run with one retried step writes four attempt lines and one run line."""
    stream = io.StringIO()
    assert run_with(EmfMetrics(stream=stream)) == "COMPLETED"

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    attempts = Counter(
        (line["saga"], line["step"], line["action"], line["outcome"])
        for line in lines
        if "relay/step_attempts" in line
    )
    assert attempts == EXPECTED_ATTEMPTS
    runs = [(line["saga"], line["status"]) for line in lines if "relay/runs_finished" in line]
    assert runs == [("shop", "COMPLETED")]


@pytest.fixture
def metric_server() -> Iterator[Any]:
    pytest.importorskip("google.cloud.monitoring_v3")
    from tests.support.monitoring import MetricServer

    server = MetricServer()
    yield server
    server.stop()


def test_cloud_monitoring_gets_the_same_counts_when_the_engine_closes(metric_server: Any) -> None:
    """Closing the engine writes the cumulative counts of the run to Cloud Monitoring."""
    from tests.support.monitoring import make_sink

    sink = make_sink(metric_server)
    harness = memory_harness([flaky_saga()], metrics=sink)
    harness.engine.closers.append(sink.close)
    started = harness.engine.runs.start("shop", {})
    harness.pump()
    assert harness.engine.runs.get(started.run.run_id).run.status.value == "COMPLETED"
    assert metric_server.requests == []  # nothing on the step's path
    harness.close()

    series = metric_server.series()
    attempts = Counter(
        {
            tuple(one.metric.labels[k] for k in ("saga", "step", "action", "outcome")): (
                one.points[0].value.int64_value
            )
            for one in series
            if one.metric.type == "custom.googleapis.com/relay/step_attempts"
        }
    )
    assert attempts == EXPECTED_ATTEMPTS
    latencies = [
        one for one in series if one.metric.type == "custom.googleapis.com/relay/step_latency"
    ]
    assert sum(one.points[0].value.distribution_value.count for one in latencies) == 4
    (run,) = [
        one for one in series if one.metric.type == "custom.googleapis.com/relay/runs_finished"
    ]
    assert dict(run.metric.labels) == {"saga": "shop", "status": "COMPLETED"}
    assert run.points[0].value.int64_value == 1
