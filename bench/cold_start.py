"""Cold start of the worker target: process start to first answered step delivery.

Both the worker and the floor (``bench/floor_function.py``: a bare functions-framework
function that imports sqlite3 and makes one durable write) are started the same way —
``functions-framework --asgi`` on a fresh port — and polled with the same client from the
instant the process is spawned until the first 200. The worker must load its run, claim,
execute and commit the first step of a real run, i.e. "first step done".

The AWS section (``bench/aws_cold_start.py``) measures the Lambda handler the same way:
a fresh interpreter imports ``functions.aws`` and answers its first HTTP invocation through
Mangum (starting a run: DynamoDB and SQS on moto server), against a bare Mangum handler
that imports boto3 and makes one DynamoDB write.

Run: ``python -m bench.cold_start [--repeats 7] [--only local|aws]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.domain.records import Message, StepName
from core.domain.status import Action, RunStatus, StepStatus
from core.engine.engine import Engine
from core.registry import SagaRegistry
from core.signing import SIGNATURE_HEADER, sign
from infra.local.runtime.supervisor import free_port
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-cold-start-key"


def prepare_run(directory: Path) -> tuple[str, bytes]:
    """Create one run of the no-op saga; return its id and the first delivery's body."""
    from bench.noop_saga import saga

    database = SQLiteDatabase(directory / "relay.db")
    engine = Engine(
        registry=SagaRegistry({"noop": saga}),
        store=SQLiteStateStore(database),
        queue=SQLiteTaskQueue(database),
    )
    run_id = engine.runs.start("noop", {}).run.run_id
    engine.close()
    database.close()
    body = json.dumps(Message(run_id, StepName("s0"), Action.EXECUTE, 1).to_json()).encode()
    return run_id, body


def time_to_first_answer(
    command: list[str],
    env: Mapping[str, str],
    port: int,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
) -> float:
    """Seconds from spawning ``command`` to the first 200 on ``path`` (any other answer fails).

    The process's stderr goes to a file (a pipe nobody reads during the start would add its
    own cost to what is measured) and is shown when the process did not exit cleanly.
    """
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            env=dict(env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
        try:
            return _poll_until_answered(proc, started, command[-5], port, path, body, headers)
        finally:
            _stop(proc)
            if proc.returncode not in (0, -signal.SIGTERM):
                errors.seek(0)
                sys.stderr.write(errors.read().decode(errors="replace")[-3000:])


def _poll_until_answered(
    proc: subprocess.Popen[bytes],
    started: float,
    target: str,
    port: int,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
) -> float:
    deadline = started + 60
    while time.perf_counter() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", path, body=body, headers=dict(headers))
            response = conn.getresponse()
            status, answer = response.status, response.read()
            conn.close()
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.002)
            continue
        if status == 200:
            return time.perf_counter() - started
        raise SystemExit(f"{target} answered HTTP {status}: {answer[:500]!r}")
    raise SystemExit(f"{target}: no answer within 60 s (exit code {proc.poll()})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def ff_command(source: Path, target: str, port: int) -> list[str]:
    binary = Path(sys.executable).with_name("functions-framework")
    return [
        str(binary),
        "--asgi",
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def measure_worker(tmp: Path) -> float:
    run_id, body = prepare_run(tmp)
    env = {
        **os.environ,
        "RELAY_DATA_DIR": str(tmp),
        "RELAY_SIGNING_KEY": KEY,
        "RELAY_SAGA_MODULES": "noop=bench.noop_saga:saga",
        "RELAY_SAGAS": "noop",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("RELAY_FAULTS", None)
    port = free_port()
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(method="POST", path="/v1/steps", body=body, key=KEY.encode()),
    }
    elapsed = time_to_first_answer(
        ff_command(ROOT / "functions" / "gcp.py", "worker", port),
        env,
        port,
        "/v1/steps",
        body,
        headers,
    )
    check = SQLiteDatabase(tmp / "relay.db")
    snapshot = SQLiteStateStore(check).load_run(run_id=run_id)  # type: ignore[arg-type]
    check.close()
    if snapshot is None or snapshot.step("s0").status is not StepStatus.SUCCEEDED:
        raise SystemExit("the worker answered but the first step is not SUCCEEDED")
    assert snapshot.run.status in (RunStatus.RUNNING, RunStatus.COMPLETED)
    return elapsed


def measure_floor(tmp: Path) -> float:
    env = {**os.environ, "RELAY_DATA_DIR": str(tmp), "PYTHONPATH": str(ROOT)}
    port = free_port()
    return time_to_first_answer(
        ff_command(ROOT / "bench" / "floor_function.py", "floor", port),
        env,
        port,
        "/",
        b"hello",
        {"content-type": "text/plain"},
    )


def measure_local(repeats: int) -> dict[str, object]:
    """Interleaved floor and worker cold starts (functions-framework --asgi, SQLite)."""
    worker: list[float] = []
    floor: list[float] = []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both
        with tempfile.TemporaryDirectory(prefix="relay-cold-") as tmp:
            floor.append(measure_floor(Path(tmp)))
        with tempfile.TemporaryDirectory(prefix="relay-cold-") as tmp:
            worker.append(measure_worker(Path(tmp)))
    return {
        "repeats": repeats,
        "floor_median_seconds": statistics.median(floor),
        "worker_median_seconds": statistics.median(worker),
        "ratio": statistics.median(worker) / statistics.median(floor),
        "floor_seconds": floor,
        "worker_seconds": worker,
    }


def report_local(result: dict[str, Any]) -> None:
    print("cold start, process spawn -> first answered request (functions-framework --asgi, local)")
    floor_ms = result["floor_median_seconds"] * 1000
    worker_ms = result["worker_median_seconds"] * 1000
    print(f"  floor (bare function, sqlite3 + one fsync'd write): median {floor_ms:.0f} ms")
    print(f"  relay worker target (load, claim, run, commit first step): median {worker_ms:.0f} ms")
    print(f"  ratio {result['ratio']:.2f} (target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=("local", "aws"), default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.only in (None, "local"):
        results["local"] = measure_local(args.repeats)
    if args.only in (None, "aws"):
        from bench import aws_cold_start

        results["aws"] = aws_cold_start.measure(args.repeats)
    if args.json:
        print(json.dumps(results if args.only is None else results[args.only], indent=2))
        return
    if "local" in results:
        report_local(results["local"])
    if "aws" in results:
        from bench import aws_cold_start

        aws_cold_start.report(results["aws"])


if __name__ == "__main__":
    main()
