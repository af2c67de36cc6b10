"""A streaming task whose worker is SIGKILLed mid-stream resumes with no chunk lost or doubled.

On the embedded backend (``relay dev``'s stack: API, dispatcher, SQLite, one worker
process), ``ticks`` (tests/e2e/stream_fixture.py) commits chunks 0..4 and holds before
chunk 5; the test waits until chunk 4 is stored, SIGKILLs the worker (its process group),
releases the gate
and waits for the run: the supervisor starts a new worker, the redelivery (once the dead
attempt's lease runs out) resumes from chunk 5, and the consumer receives 0..11 once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from infra.local.fs_io_manager import FilesystemIOManager
from tooling.dev_stack import DevStack

pytestmark = pytest.mark.slow

PIPELINE_MODULES = "ticker=tests.e2e.stream_fixture:pipeline"
COUNT, HOLD_AT = 12, 5
TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED", "CANCELLED"}


async def _until(
    condition: Callable[[], Awaitable[bool]], *, timeout_seconds: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not (await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_worker_killed_mid_stream_resumes_after_the_last_committed_chunk(
    tmp_path: Path,
) -> None:
    data_dir, gate = tmp_path / "data", tmp_path / "gate"
    gate.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_PIPELINE_MODULES=PIPELINE_MODULES, RELAY_DATA_DIR=str(data_dir))
    outputs = FilesystemIOManager(data_dir / "outputs")

    async def scenario() -> tuple[dict[str, object], list[int], list[int]]:
        stack = DevStack(
            data_dir=data_dir, port=0, workers=1, environ=env, sweep_interval_seconds=1.0
        )
        await stack.start()
        try:
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
                started = await client.post(
                    "/v1/sagas/ticker/runs",
                    json={"count": COUNT, "hold_at": HOLD_AT, "gate_dir": str(gate)},
                )
                assert started.status_code == 202, started.text
                run_id = started.json()["run_id"]

                async def held() -> bool:
                    chunks = outputs.list_chunks(run_id=run_id, step="ticks")
                    return HOLD_AT - 1 in chunks

                await _until(held, timeout_seconds=30, what=f"chunk {HOLD_AT - 1} stored")
                (victim,) = stack.worker_pids
                os.killpg(victim, signal.SIGKILL)  # the worker leads its process group
                before_resume = outputs.list_chunks(run_id=run_id, step="ticks")
                (gate / "release").touch()

                async def finished() -> bool:
                    view = (await client.get(f"/v1/runs/{run_id}")).json()
                    return view["status"] in TERMINAL

                await _until(finished, timeout_seconds=90, what="the run to end")
                view = (await client.get(f"/v1/runs/{run_id}")).json()
                assert victim not in stack.worker_pids
                chunks = outputs.list_chunks(run_id=run_id, step="ticks")
                loaded = [
                    outputs.load_chunk(run_id=run_id, step="ticks", index=i)["index"]
                    for i in chunks
                ]
                assert before_resume == list(range(HOLD_AT))
                return dict(view), chunks, loaded
        finally:
            await stack.stop()

    view, chunks, loaded = asyncio.run(scenario())
    assert view["status"] == "COMPLETED", view
    assert chunks == list(range(COUNT))
    assert loaded == list(range(COUNT))
    assert _lines(gate / "received") == [list(range(COUNT))]  # the consumer ran once
    assert _lines(gate / "starts") == [0, HOLD_AT]  # the redelivery resumed at the gap
    output = view["output"]
    assert isinstance(output, dict) and output["tally"] == list(range(COUNT))
    steps = {s["name"]: s for s in view["steps"]}  # type: ignore[attr-defined]
    assert steps["ticks"]["execute_attempts"] == 2
