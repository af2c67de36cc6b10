"""An in-process ``StateStore`` for fast engine unit tests: dicts behind one lock.

It keeps the same contract as the durable stores, including their storage quirks: JSON
fields are stored as JSON text, so a value that SQLite or Firestore would reject (or turn
a tuple into a list) behaves the same here, and callers cannot mutate stored state
through objects they passed in or got back.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.status import RunStatus
from core.errors import ConcurrencyConflict
from core.ports.state_store import check_run_ids


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _freeze_run(run: RunRecord) -> RunRecord:
    return dataclasses.replace(run, input=_dumps(run.input), output=_dumps(run.output))


def _thaw_run(run: RunRecord) -> RunRecord:
    return dataclasses.replace(run, input=json.loads(run.input), output=json.loads(run.output))


def _freeze_step(step: StepRecord) -> StepRecord:
    return dataclasses.replace(step, output=_dumps(step.output))


def _thaw_step(step: StepRecord) -> StepRecord:
    return dataclasses.replace(step, output=json.loads(step.output))


class MemoryStateStore:
    """A ``StateStore`` in process memory; nothing survives the process.

    ``delivers_outbox`` is False: the engine enqueues a change's outbox itself after
    ``apply`` returns, which is the path the cloud stores take too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[RunId, RunRecord] = {}
        self._steps: dict[RunId, dict[StepName, StepRecord]] = {}

    @property
    def delivers_outbox(self) -> bool:
        """False: outbox messages are left to the engine to enqueue after the write."""
        return False

    def describe(self) -> Mapping[str, str]:
        """Names the backend; there is no location to report."""
        return {"backend": "memory"}

    def create_run(
        self, *, run: RunRecord, steps: Sequence[StepRecord], outbox: Sequence[Message]
    ) -> tuple[RunRecord, bool]:
        """Create a run with its step records unless it exists; ``outbox`` is not delivered.

        Returns:
            The stored header and whether this call created it.
        """
        check_run_ids(run.run_id, [run], steps)
        frozen_run = _freeze_run(run)
        frozen_steps = {step.name: _freeze_step(step) for step in steps}
        with self._lock:
            stored = self._runs.get(run.run_id)
            if stored is not None:
                return _thaw_run(stored), False
            self._runs[run.run_id] = frozen_run
            self._steps[run.run_id] = frozen_steps
        return _thaw_run(frozen_run), True

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        """Read a run header and all its step records (ordered by name)."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            steps = sorted(self._steps[run_id].items())
        return RunSnapshot(run=_thaw_run(run), steps={n: _thaw_step(s) for n, s in steps})

    def apply(self, *, change: StateChange) -> None:
        """Write ``change`` atomically if every version precondition holds.

        Raises:
            ConcurrencyConflict: a record or check no longer matches; nothing was written.
        """
        run_id = change.run_id
        check_run_ids(run_id, [change.run] if change.run is not None else [], change.steps)
        new_run = _freeze_run(change.run) if change.run is not None else None
        new_steps = [_freeze_step(step) for step in change.steps]
        with self._lock:
            stored_steps = self._steps.get(run_id, {})
            if new_run is not None:
                _expect(run_id, "run header", new_run.version - 1, self._runs.get(run_id))
            for step in new_steps:
                _expect(
                    run_id, f"step {step.name!r}", step.version - 1, stored_steps.get(step.name)
                )
            for check in change.checks:
                _expect(
                    run_id,
                    f"checked step {check.step!r}",
                    check.version,
                    stored_steps.get(check.step),
                )
            # Every precondition held: only now write, so a conflict writes nothing.
            if new_run is not None:
                self._runs[run_id] = new_run
            if new_steps:
                stored = self._steps.setdefault(run_id, {})
                for step in new_steps:
                    stored[step.name] = step

    def list_runs(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Run headers, newest first (ties by run id, descending), filtered by saga/status."""
        if limit <= 0:
            return []
        wanted = None if statuses is None else set(statuses)
        with self._lock:
            runs = [
                run
                for run in self._runs.values()
                if (saga is None or run.saga == saga) and (wanted is None or run.status in wanted)
            ]
        runs.sort(key=lambda run: (run.created_at, run.run_id), reverse=True)
        return [_thaw_run(run) for run in runs[:limit]]

    def count_runs_by_status(self, *, saga: str | None = None) -> Mapping[RunStatus, int]:
        """How many runs are in each status; every status is present, zero when unused."""
        counts = dict.fromkeys(RunStatus, 0)
        with self._lock:
            for run in self._runs.values():
                if saga is None or run.saga == saga:
                    counts[run.status] += 1
        return counts


def _expect(run_id: str, what: str, expected: int, stored: RunRecord | StepRecord | None) -> None:
    """Raise ``ConcurrencyConflict`` unless ``stored`` is at ``expected`` (0: absent)."""
    found = 0 if stored is None else stored.version
    if found != expected:
        expected_text = "no record" if expected == 0 else f"version {expected}"
        found_text = "no record" if stored is None else f"version {found}"
        raise ConcurrencyConflict(
            run_id=run_id, detail=f"{what}: expected {expected_text}, found {found_text}"
        )
