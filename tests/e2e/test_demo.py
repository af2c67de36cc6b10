"""``relay demo`` on a fresh data directory, as ``make demo`` runs it on a fresh clone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_relay_demo_exits_0_showing_completed_and_compensated_runs(tmp_path: Path) -> None:
    """The demo finishes well under a minute with both outcomes and clean invariants.

    It runs outside the project with a relative data dir, as a user's shell would: the
    stack it starts runs in the project root and must still use the caller's directory.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_DATA_DIR"] = "relay"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    began = time.monotonic()

    completed = subprocess.run(
        [sys.executable, "-m", "tooling.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    elapsed = time.monotonic() - began
    output = completed.stdout
    assert completed.returncode == 0, output[-4000:] + completed.stderr[-4000:]
    assert elapsed < 60
    assert "COMPLETED" in output and "COMPENSATED" in output
    assert "onboarding" in output
    assert "etl" in output and "1 ETL pipeline run" in output  # the pipeline beside the sagas
    assert "effects of" in output  # what each shown run did to the demo services
    assert "holds" in output and "balanced" in output and "violated" not in output
    assert str(tmp_path / "relay") in output  # it says where the data went
