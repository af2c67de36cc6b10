"""JSON views of runs and steps: the shapes of the HTTP contract and ``relay runs --json``.

A list entry (``run_list_view``) names a run and its status only: no input, output or
error, so listing never shows run data. The run view (``run_view``, for callers who may
read the saga) carries input, output, error and the audit trail of operator actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from core.domain.audit import AuditEntry
from core.domain.records import RunRecord, RunSnapshot, StepRecord


def iso_time(epoch_seconds: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC with milliseconds (``...T12:00:00.000Z``)."""
    if epoch_seconds is None:
        return None
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_list_view(run: RunRecord) -> dict[str, Any]:
    """A list entry: which run, of which saga, in which status, since when."""
    return {
        "run_id": run.run_id,
        "saga": run.saga,
        "status": run.status.value,
        "created_at": iso_time(run.created_at),
        "updated_at": iso_time(run.updated_at),
    }


def run_header_view(run: RunRecord) -> dict[str, Any]:
    """The top of a run view: the list entry plus input, output, error and the audit trail."""
    return {
        **run_list_view(run),
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "audit": [audit_view(entry) for entry in run.audit],
    }


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    """One operator action: what, by whom, from where, when (ISO-8601)."""
    return {
        "action": entry.action,
        "actor": entry.actor,
        "source": entry.source,
        "at": iso_time(entry.at),
    }


def step_view(step: StepRecord) -> dict[str, Any]:
    """The public JSON view of one step record.

    ``attempts`` counts every attempt, the step's and its compensation's;
    ``execute_attempts`` and ``compensation_attempts`` split it.
    """
    return {
        "name": step.name,
        "status": step.status.value,
        "attempts": step.attempt,
        "execute_attempts": step.execute_attempts,
        "compensation_attempts": step.compensation_attempts,
        "started_at": iso_time(step.started_at),
        "finished_at": iso_time(step.finished_at),
        "error": step.error,
        "error_detail": step.error_detail or step.error,
    }


def run_view(snapshot: RunSnapshot, step_order: Sequence[str] | None = None) -> dict[str, Any]:
    """The public JSON view of a run with its steps.

    ``error`` is the run's current error; ``compensation_reason`` why it compensated (or
    compensates), kept when a failed compensation replaced the error. Steps follow
    ``step_order`` (the saga's definition order); without it, the order they started in,
    unstarted steps last.
    """
    records = list(snapshot.steps.values())
    if step_order:
        rank = {name: index for index, name in enumerate(step_order)}
        records.sort(key=lambda r: rank.get(r.name, len(rank)))
    else:
        records.sort(key=lambda r: (r.started_at is None, r.started_at or 0.0))
    return {
        **run_header_view(snapshot.run),
        "compensation_reason": snapshot.run.compensation_reason,
        "error_detail": snapshot.run.error_detail or snapshot.run.error,
        "steps": [step_view(r) for r in records],
    }
