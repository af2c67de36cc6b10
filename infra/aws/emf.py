"""CloudWatch Embedded Metric Format: metrics as JSON log lines on stdout, no API call.

Lambda ships stdout to CloudWatch Logs, which extracts the metrics of every line whose
``_aws`` object declares them (the EMF specification:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).

One line per observation, not an aggregate flushed per invocation, because:

- a Lambda container may be frozen after the response and never thawed, and the chaos
  fault ``RELAY_FAULTS`` crash exits with ``os._exit``: anything buffered is lost, while a
  line written when the attempt finished is already in CloudWatch Logs;
- nothing has to be wired into the handler (no flush to forget on one code path);
- CloudWatch bills EMF by log bytes ingested and by metric (name and dimension set), not
  by line; one attempt line is about 300 bytes beside the several log lines an attempt
  already writes, and percentiles are computed from exact values.

``flush()`` and ``close()`` exist for symmetry with the buffered sinks and do nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

from core.ports.metrics import RUNS_FINISHED, STEP_ATTEMPTS, STEP_LATENCY, MetricDefinition

log = logging.getLogger("relay.metrics")

DEFAULT_NAMESPACE: Final = "Relay"
MAX_DIMENSION_VALUE_CHARS: Final = 1024
"""CloudWatch's limit on a dimension value; longer values are cut."""

_UNITS: Final = {"1": "Count", "ms": "Milliseconds"}
"""UCUM units of ``core.ports.metrics`` to CloudWatch's unit names."""


class EmfMetrics:
    """A ``MetricsSink`` writing one EMF JSON line per observation.

    Args:
        namespace: The CloudWatch namespace (must not start with ``AWS/``).
        stream: Where lines go; the current ``sys.stdout`` per line when None (Lambda's
            runtime and test runners may replace stdout after construction).
        clock: Wall-clock seconds, for the ``Timestamp`` (milliseconds since the epoch).
        properties: Extra top-level keys on every line (e.g. the function name); they are
            searchable in Logs Insights and are not dimensions.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        if not namespace or namespace.startswith("AWS/"):
            raise ValueError(f"EMF namespace {namespace!r} must be non-empty and not AWS/...")
        self._namespace = namespace
        self._stream = stream
        self._clock = clock
        self._properties = dict(properties or {})
        self._lock = threading.Lock()  # lines from concurrent threads must not interleave

    def describe(self) -> Mapping[str, str]:
        """Where the metrics go, for startup logs."""
        return {"metrics": "cloudwatch_emf", "namespace": self._namespace, "stream": "stdout"}

    def record_attempt(
        self, *, saga: str, step: str, action: str, outcome: str, duration_seconds: float
    ) -> None:
        """Write one line with a count of 1 and the attempt's latency in milliseconds."""
        labels = {"saga": saga, "step": step, "action": action, "outcome": outcome}
        self._write(
            (STEP_ATTEMPTS, STEP_LATENCY),
            labels,
            {
                STEP_ATTEMPTS.name: 1,
                STEP_LATENCY.name: round(max(0.0, duration_seconds) * 1000.0, 3),
            },
        )

    def record_run(self, *, saga: str, status: str) -> None:
        """Write one line counting a run that became terminal."""
        self._write((RUNS_FINISHED,), {"saga": saga, "status": status}, {RUNS_FINISHED.name: 1})

    def flush(self) -> None:
        """Nothing is buffered: every observation was written when it was recorded."""

    def close(self) -> None:
        """Nothing to release."""

    def _write(
        self,
        definitions: tuple[MetricDefinition, ...],
        labels: Mapping[str, str],
        values: Mapping[str, float | int],
    ) -> None:
        """Render and write one line; never raises (a metrics failure must not fail a step)."""
        try:
            line = render_line(
                namespace=self._namespace,
                definitions=definitions,
                labels=labels,
                values=values,
                timestamp_ms=int(self._clock() * 1000),
                properties=self._properties,
            )
            with self._lock:
                stream = self._stream or sys.stdout
                stream.write(line + "\n")
                stream.flush()
        except Exception:
            log.warning("metrics: could not write an EMF line", exc_info=True)


def render_line(
    *,
    namespace: str,
    definitions: tuple[MetricDefinition, ...],
    labels: Mapping[str, str],
    values: Mapping[str, float | int],
    timestamp_ms: int,
    properties: Mapping[str, str] | None = None,
) -> str:
    """One EMF document: the ``_aws`` metadata, then dimension values and metric values.

    All ``definitions`` share one dimension set (their common label keys, in order), so
    the line declares one metric directive.
    """
    dimensions = list(definitions[0].labels)
    document: dict[str, Any] = dict(properties or {})
    document["_aws"] = {
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [
            {
                "Namespace": namespace,
                "Dimensions": [dimensions],
                "Metrics": [
                    {"Name": one.name, "Unit": _UNITS.get(one.unit, "None")} for one in definitions
                ],
            }
        ],
    }
    for key in dimensions:
        document[key] = (str(labels[key]) or "-")[:MAX_DIMENSION_VALUE_CHARS]
    for one in definitions:
        document[one.name] = values[one.name]
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
