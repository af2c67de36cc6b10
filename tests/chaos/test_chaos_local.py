"""The issue's chaos campaign on the embedded backend, through ``relay chaos`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = 200
FAULTS = "*:fail@0.2;*:crash@0.05;*:duplicate@0.1"
CAMPAIGN_TIMEOUT_SECONDS = 420
"""The deadline: generous for a loaded 2-core machine; idle, the campaign takes ~100 s."""


@pytest.mark.slow
@pytest.mark.timeout(CAMPAIGN_TIMEOUT_SECONDS + 60)
def test_order_campaign_with_faults_and_a_stack_kill_ends_clean(tmp_path: Path) -> None:
    """200 order runs under failures, crashes, duplicates and one SIGKILL all end well."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    data_dir = tmp_path / "campaign"
    command = [
        sys.executable, "-m", "tooling.cli", "chaos", "order",
        "--runs", str(RUNS), "--faults", FAULTS, "--kill-stack-once",
        "--timeout", str(CAMPAIGN_TIMEOUT_SECONDS), "--data-dir", str(data_dir), "--json",
    ]  # fmt: skip
    began = time.monotonic()

    completed = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CAMPAIGN_TIMEOUT_SECONDS + 45,
        check=False,
    )

    elapsed = time.monotonic() - began
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    report = json.loads(completed.stdout)
    checks = report["checks"]
    assert report["ok"] is True and report["all_finished"] is True
    assert report["kill"]["done"] is True and report["kill"]["after_starts"] == RUNS // 2
    assert report["start_errors"] == []
    assert sum(checks["statuses"].values()) == RUNS
    assert set(checks["statuses"]) <= {"COMPLETED", "COMPENSATED"}
    assert checks["statuses"].get("COMPLETED", 0) > 0
    assert checks["statuses"].get("COMPENSATED", 0) > 0
    assert checks["bad_ending_count"] == 0
    assert checks["invariant_violation_count"] == 0
    assert checks["ledger_checked"] == ["order"] and checks["ledger_violations"] == []
    assert all(result["violated"] == 0 for result in checks["invariants"].values())
    assert len(checks["invariants"]) >= 4
    assert report["faults_observed"]["worker_crashes"] > 0  # the crash faults really fired
    print(
        f"chaos: {RUNS} runs in {elapsed:.1f}s; statuses {checks['statuses']}; "
        f"faults observed {report['faults_observed']}; kill {report['kill']}"
    )
