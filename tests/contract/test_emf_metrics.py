"""EmfMetrics lines obey the CloudWatch Embedded Metric Format specification's rules."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from core.ports.metrics import ALL_METRICS, RUNS_FINISHED, STEP_ATTEMPTS, STEP_LATENCY
from infra.aws.emf import EmfMetrics

# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
CLOUDWATCH_UNITS = {
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
}


def check_emf(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Assert the specification's rules on one parsed line; return its metric directives."""
    metadata = document["_aws"]
    assert isinstance(metadata["Timestamp"], int) and metadata["Timestamp"] > 1_600_000_000_000
    directives = metadata["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for directive in directives:
        namespace = directive["Namespace"]
        assert isinstance(namespace, str) and 1 <= len(namespace) <= 255
        assert not namespace.startswith("AWS/")
        assert isinstance(directive["Dimensions"], list)
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(document[key], str) and 1 <= len(document[key]) <= 1024
        metrics = directive["Metrics"]
        assert 1 <= len(metrics) <= 100
        for metric in metrics:
            name = metric["Name"]
            assert isinstance(name, str) and 1 <= len(name) <= 255
            assert isinstance(document[name], int | float)
            assert metric.get("Unit", "None") in CLOUDWATCH_UNITS
    return list(directives)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_attempt_is_one_line_with_count_and_latency_by_saga_step_action_outcome() -> None:
    """record_attempt writes one EMF line: count 1 and milliseconds, four dimensions."""
    stream = io.StringIO()
    sink = EmfMetrics(stream=stream, clock=lambda: 1_764_000_000.5)
    sink.record_attempt(
        saga="order", step="charge", action="execute", outcome="succeeded", duration_seconds=0.0125
    )

    (line,) = lines_of(stream)
    (directive,) = check_emf(line)
    assert line["_aws"]["Timestamp"] == 1_764_000_000_500
    assert directive["Namespace"] == "Relay"
    assert directive["Dimensions"] == [["saga", "step", "action", "outcome"]]
    assert directive["Metrics"] == [
        {"Name": "relay/step_attempts", "Unit": "Count"},
        {"Name": "relay/step_latency", "Unit": "Milliseconds"},
    ]
    assert (line["saga"], line["step"], line["action"], line["outcome"]) == (
        "order",
        "charge",
        "execute",
        "succeeded",
    )
    assert line["relay/step_attempts"] == 1
    assert line["relay/step_latency"] == pytest.approx(12.5)


def test_a_finished_run_is_counted_by_saga_and_status() -> None:
    """record_run writes relay/runs_finished with the saga and status dimensions."""
    stream = io.StringIO()
    EmfMetrics(stream=stream, namespace="Shop/Relay").record_run(saga="order", status="COMPENSATED")

    (line,) = lines_of(stream)
    (directive,) = check_emf(line)
    assert directive["Namespace"] == "Shop/Relay"
    assert directive["Dimensions"] == [["saga", "status"]]
    assert directive["Metrics"] == [{"Name": "relay/runs_finished", "Unit": "Count"}]
    assert (line["saga"], line["status"], line["relay/runs_finished"]) == (
        "order",
        "COMPENSATED",
        1,
    )


def test_metric_names_are_the_ones_cloud_monitoring_gets() -> None:
    """Every shared metric name appears in EMF lines, under the same name as on GCP."""
    stream = io.StringIO()
    sink = EmfMetrics(stream=stream)
    sink.record_attempt(
        saga="s", step="a", action="compensate", outcome="rejected", duration_seconds=1.0
    )
    sink.record_run(saga="s", status="FAILED")

    names = {
        metric["Name"]
        for line in lines_of(stream)
        for directive in check_emf(line)
        for metric in directive["Metrics"]
    }
    assert names == {one.name for one in ALL_METRICS}
    assert {STEP_ATTEMPTS.name, STEP_LATENCY.name, RUNS_FINISHED.name} == names


def test_empty_and_long_dimension_values_stay_valid() -> None:
    """An empty label becomes '-' and a long one is cut to CloudWatch's 1024 characters."""
    stream = io.StringIO()
    EmfMetrics(stream=stream).record_attempt(
        saga="", step="x" * 2000, action="execute", outcome="failed", duration_seconds=0.0
    )

    (line,) = lines_of(stream)
    check_emf(line)
    assert line["saga"] == "-"
    assert len(line["step"]) == 1024


def test_properties_are_top_level_keys_but_not_dimensions() -> None:
    """Extra properties ride along for Logs Insights without creating metrics."""
    stream = io.StringIO()
    EmfMetrics(stream=stream, properties={"function": "relay-worker"}).record_run(
        saga="order", status="COMPLETED"
    )

    (line,) = lines_of(stream)
    (directive,) = check_emf(line)
    assert line["function"] == "relay-worker"
    assert "function" not in directive["Dimensions"][0]


def test_a_broken_stream_never_raises_into_the_engine() -> None:
    """Writing to a closed stream is logged, not raised."""
    stream = io.StringIO()
    stream.close()
    sink = EmfMetrics(stream=stream)
    sink.record_attempt(
        saga="order", step="charge", action="execute", outcome="succeeded", duration_seconds=0.1
    )
    sink.record_run(saga="order", status="COMPLETED")
    sink.flush()
    sink.close()


def test_without_a_stream_lines_go_to_the_current_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lambda ships stdout to CloudWatch Logs: by default each line goes there."""
    EmfMetrics().record_run(saga="order", status="COMPLETED")

    (text,) = capsys.readouterr().out.splitlines()
    check_emf(json.loads(text))


def test_an_aws_namespace_is_refused() -> None:
    """Namespaces starting with AWS/ are reserved by CloudWatch."""
    with pytest.raises(ValueError, match="AWS/"):
        EmfMetrics(namespace="AWS/Lambda")
