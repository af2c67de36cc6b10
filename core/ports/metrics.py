"""The metrics port: counts and latencies of step attempts, kept off the hot path."""

from __future__ import annotations

from typing import Protocol


class MetricsSink(Protocol):
    """Receives one observation per finished attempt and per run outcome.

    Adapters must not block the caller on network I/O (buffer and flush in batches, or
    write log lines such as CloudWatch EMF); a failing sink must never fail a step.
    """

    def record_attempt(
        self, *, saga: str, step: str, action: str, outcome: str, duration_seconds: float
    ) -> None:
        """One attempt of a step or compensation finished with ``outcome``."""
        ...

    def record_run(self, *, saga: str, status: str) -> None:
        """A run reached terminal ``status``."""
        ...


class NullMetrics:
    """Discards every observation (the default when no sink is configured)."""

    def record_attempt(
        self, *, saga: str, step: str, action: str, outcome: str, duration_seconds: float
    ) -> None:
        """Ignore the observation."""

    def record_run(self, *, saga: str, status: str) -> None:
        """Ignore the observation."""
