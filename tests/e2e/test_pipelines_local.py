"""The example ETL pipeline on the embedded backend: over HTTP, and with ``relay start --wait``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tooling.cli.main import main
from tooling.dev_stack import DevStack

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED", "CANCELLED"}


def _environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_DATA_DIR"] = str(data_dir)
    return env


async def _until_finished(client: httpx.AsyncClient, run_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        view: dict[str, object] = (await client.get(f"/v1/runs/{run_id}")).json()
        if view["status"] in TERMINAL or time.monotonic() > deadline:
            return view
        await asyncio.sleep(0.05)


def test_post_sagas_etl_runs_validates_the_input_and_runs_the_pipeline(tmp_path: Path) -> None:
    """POST /v1/sagas/etl/runs: 422 naming a bad field; a good input runs every task once."""
    data_dir = tmp_path / "data"

    async def scenario() -> tuple[httpx.Response, httpx.Response, dict[str, object]]:
        stack = DevStack(data_dir=data_dir, port=0, in_process=True, environ=_environment(data_dir))
        await stack.start()
        try:
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
                bad = await client.post("/v1/sagas/etl/runs", json={"row_count": "lots"})
                started = await client.post(
                    "/v1/sagas/etl/runs", json={"row_count": 40, "seed": 11}
                )
                view = await _until_finished(client, started.json()["run_id"])
                return bad, started, view
        finally:
            await stack.stop()

    bad, started, view = asyncio.run(scenario())
    assert bad.status_code == 422, bad.text
    assert "row_count" in bad.text
    assert started.status_code == 202, started.text
    assert view["status"] == "COMPLETED", view
    steps = view["steps"]
    assert isinstance(steps, list)
    assert [s["name"] for s in steps] == ["extract", "audit", "transform", "load"]
    assert {s["status"] for s in steps} == {"SUCCEEDED"}
    assert all(s["execute_attempts"] == 1 for s in steps)


def test_relay_start_etl_wait_runs_the_example_to_completion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relay start etl --wait`` (defaults for every input), then ``relay runs show``."""
    data_dir = tmp_path / "data"
    env = _environment(data_dir)

    async def scenario() -> tuple[int, str, str]:
        stack = DevStack(data_dir=data_dir, port=0, in_process=True, environ=env)
        await stack.start()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tooling.cli",
                "start",
                "etl",
                "--wait",
                "--json",
                "--timeout",
                "60",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), timeout=90)
            assert process.returncode is not None
            return process.returncode, out.decode(), err.decode()
        finally:
            await stack.stop()

    code, out, err = asyncio.run(scenario())
    assert code == 0, err
    view = json.loads(out)
    assert view["saga"] == "etl"
    assert view["status"] == "COMPLETED"
    load = view["output"]["load"]
    assert load["orders"] + load["rejected"] == 200  # the pipeline input's defaults
    assert [s["name"] for s in view["steps"]] == ["extract", "audit", "transform", "load"]

    for name in [n for n in os.environ if n.startswith("RELAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RELAY_DATA_DIR", str(data_dir))
    shown = CliRunner().invoke(main, ["runs", "show", view["run_id"]])
    assert shown.exit_code == 0, shown.output
    assert "COMPLETED" in shown.output
    for task_name in ("extract", "audit", "transform", "load"):
        assert task_name in shown.output
