"""After a campaign or demo: did every run end well, and does every declared invariant hold?

Runs are read from the local store of the campaign's data directory, and invariants read
the demo services' database in the same directory, so the check sees what the stack
really did, not what the API said. A saga module may also define
``ledger_violations(completed_run_ids, *, campaign_run_ids)``, a check across runs
(stock conserved, money balanced) that no single run can make.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from core.domain.records import RunSnapshot
from core.domain.status import RunStatus
from core.engine.engine import Engine

GOOD_ENDINGS: Final = frozenset({RunStatus.COMPLETED, RunStatus.COMPENSATED})
MAX_LISTED: Final = 50
"""Violations listed per kind in a report; the count is always exact."""


@dataclass
class CheckReport:
    """What the checks found over a set of runs."""

    statuses: Counter[str] = field(default_factory=Counter)
    bad_endings: list[dict[str, Any]] = field(default_factory=list)
    invariant_results: dict[str, dict[str, int]] = field(default_factory=dict)
    invariant_violations: list[str] = field(default_factory=list)
    ledger_checked: list[str] = field(default_factory=list)
    ledger_violations: list[str] = field(default_factory=list)
    step_attempts: int = 0
    snapshots: dict[str, RunSnapshot] = field(default_factory=dict, repr=False)

    @property
    def is_clean(self) -> bool:
        """True when every run ended COMPLETED or COMPENSATED and nothing was violated."""
        return not (self.bad_endings or self.invariant_violations or self.ledger_violations)

    def to_json(self) -> dict[str, Any]:
        """The report's JSON form (lists cut to ``MAX_LISTED``, counts exact)."""
        return {
            "statuses": dict(sorted(self.statuses.items())),
            "bad_endings": self.bad_endings[:MAX_LISTED],
            "bad_ending_count": len(self.bad_endings),
            "invariants": self.invariant_results,
            "invariant_violations": self.invariant_violations[:MAX_LISTED],
            "invariant_violation_count": len(self.invariant_violations),
            "ledger_checked": self.ledger_checked,
            "ledger_violations": self.ledger_violations[:MAX_LISTED],
            "step_attempts": self.step_attempts,
            "is_clean": self.is_clean,
        }


@contextmanager
def demo_services_at(data_dir: Path) -> Iterator[None]:
    """Point the demo services of this process at ``data_dir`` for the duration.

    The services find their database through ``RELAY_DATA_DIR`` (as the workers that
    ran the steps did); their connections are closed on the way out.
    """
    from functions.demo_services import db

    previous = os.environ.get("RELAY_DATA_DIR")
    os.environ["RELAY_DATA_DIR"] = str(data_dir)
    try:
        yield
    finally:
        db.close_all()
        if previous is None:
            os.environ.pop("RELAY_DATA_DIR", None)
        else:
            os.environ["RELAY_DATA_DIR"] = previous


def check_runs(engine: Engine, run_ids: Sequence[str], *, data_dir: Path) -> CheckReport:
    """Check the endings, the invariants of each run and each saga's ledger.

    Args:
        engine: An engine on the campaign's data directory (nothing may still run there).
        run_ids: The runs the campaign started.
        data_dir: The campaign's data directory (for the demo services' database).
    """
    report = CheckReport()
    by_saga: dict[str, list[RunSnapshot]] = {}
    for run_id in run_ids:
        snapshot = engine.runs.get(run_id)
        run = snapshot.run
        report.snapshots[run_id] = snapshot
        report.statuses[run.status.value] += 1
        report.step_attempts += sum(step.attempt for step in snapshot.steps.values())
        by_saga.setdefault(run.saga, []).append(snapshot)
        if run.status not in GOOD_ENDINGS:
            error = run.error_detail or run.error  # an operator's report: the full text
            report.bad_endings.append(
                {"run_id": run_id, "saga": run.saga, "status": run.status.value, "error": error}
            )
    with demo_services_at(data_dir):
        for saga_name, snapshots in sorted(by_saga.items()):
            saga = engine.registry.get(saga_name)
            for invariant in saga.invariants:
                _check_invariant(report, saga_name, invariant, snapshots)
            ledger = _ledger_check(engine, saga_name)
            if ledger is not None:
                report.ledger_checked.append(saga_name)
                completed = [s.run.run_id for s in snapshots if s.run.status is RunStatus.COMPLETED]
                everyone = [s.run.run_id for s in snapshots]
                try:
                    report.ledger_violations.extend(ledger(completed, campaign_run_ids=everyone))
                except Exception as exc:  # a broken check must fail the report, not hide
                    report.ledger_violations.append(
                        f"{saga_name} ledger check raised {type(exc).__name__}: {exc}"
                    )
    return report


def _check_invariant(
    report: CheckReport,
    saga_name: str,
    invariant: Callable[[Any], Any],
    snapshots: Sequence[RunSnapshot],
) -> None:
    name = f"{saga_name}.{getattr(invariant, '__name__', repr(invariant))}"
    failed = 0
    for snapshot in snapshots:
        try:
            found = [str(v) for v in invariant(snapshot)]
        except Exception as exc:
            found = [f"{name} raised {type(exc).__name__} on run {snapshot.run.run_id}: {exc}"]
        if found:
            failed += 1
            report.invariant_violations.extend(f"{name}: {v}" for v in found)
    report.invariant_results[name] = {"runs": len(snapshots), "violated": failed}


def _ledger_check(engine: Engine, saga_name: str) -> Callable[..., list[str]] | None:
    """The saga module's ``ledger_violations`` function, when it has one."""
    saga = engine.registry.get(saga_name)
    first_step = next(iter(saga.steps.values()))
    module = importlib.import_module(first_step.fn.__module__)
    check = getattr(module, "ledger_violations", None)
    return check if callable(check) else None
