"""Step-transition throughput and overhead on the embedded backend, against a raw SQLite floor.

What it measures, all in one process run so the ratios compare like with like:

1. ``floor``: single-row INSERT commits per second into a fresh WAL database with
   ``synchronous=FULL`` (every commit fsync'd) — the rate DESIGN.md's target is relative to.
2. ``throughput``: 500 runs x 5 no-op steps, 32 deliveries in flight, through the real
   dispatcher, in-process and over HTTP (signed deliveries to functions-framework worker
   processes): step transitions per second, the ratio to the floor, durable commits per
   transition, and per-delivery latency percentiles under that load.
3. ``overhead``: the same steps one at a time (1 in flight): the engine's own cost per step
   (load, claim, execute a no-op, commit) at p50 and p99.

Run: ``python -m bench.transitions [--runs 500] [--steps 5] [--concurrency 32] [--http-workers 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.domain.records import Message
from core.domain.saga import Saga
from core.domain.status import RunStatus
from core.engine.engine import Engine
from core.engine.saga_runner import HandleResult
from core.registry import SagaRegistry
from infra.local.runtime.dispatcher import Dispatcher, HttpDelivery, InProcessDelivery
from infra.local.runtime.supervisor import free_port
from infra.local.sqlite_db import SQLiteDatabase
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore

ROOT = Path(__file__).resolve().parents[1]
SAGA_MODULE = "bench.noop_saga"


def raw_commit_rate(directory: Path, seconds: float = 2.0) -> float:
    """Single-row commits per second with WAL and synchronous=FULL (the floor)."""
    conn = sqlite3.connect(directory / "floor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 64,))
        conn.execute("COMMIT")
        count += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


class TimedEngine:
    """Wraps ``Engine.handle`` to record how long each delivery took."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.durations: list[float] = []

    def handle(self, message: Message) -> HandleResult:
        started = time.perf_counter()
        result = self.engine.handle(message)
        self.durations.append(time.perf_counter() - started)
        return result


@dataclass
class Backend:
    """An engine on a fresh SQLite database in ``directory``."""

    directory: Path
    steps: int
    database: SQLiteDatabase = field(init=False)
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        from bench.noop_saga import build_saga

        self.database = SQLiteDatabase(self.directory / "relay.db")
        saga: Saga = build_saga(self.steps)
        self.engine = Engine(
            registry=SagaRegistry({saga.name: saga}),
            store=SQLiteStateStore(self.database),
            queue=SQLiteTaskQueue(self.database),
        )

    def start_runs(self, count: int) -> list[str]:
        return [self.engine.runs.start("noop", {"i": i}).run.run_id for i in range(count)]

    def all_completed(self, run_ids: list[str]) -> bool:
        counts = self.engine.store.count_runs_by_status(saga="noop")
        return counts.get(RunStatus.COMPLETED, 0) == len(run_ids)

    def close(self) -> None:
        self.engine.close()
        self.database.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def drive(backend: Backend, dispatcher: Dispatcher, run_ids: list[str]) -> float:
    """Deliver until every run completed; returns the elapsed seconds."""
    started = time.perf_counter()
    async with dispatcher:
        await dispatcher.run_until_idle(timeout_seconds=600)
    elapsed = time.perf_counter() - started
    if not backend.all_completed(run_ids):
        raise SystemExit("benchmark runs did not all complete; the engine is broken")
    return elapsed


def in_process_phase(directory: Path, *, runs: int, steps: int, concurrency: int) -> dict[str, Any]:
    """Throughput (or, with concurrency 1, overhead) with in-process delivery."""
    backend = Backend(directory, steps)
    try:
        run_ids = backend.start_runs(runs)
        timed = TimedEngine(backend.engine)
        before = backend.database.commit_counts()
        dispatcher = Dispatcher(
            SQLiteTaskQueue(backend.database),
            InProcessDelivery(timed, concurrency=concurrency),
            concurrency=concurrency,
        )
        elapsed = asyncio.run(drive(backend, dispatcher, run_ids))
        after = backend.database.commit_counts()
        transitions = runs * steps
        return {
            "transitions": transitions,
            "seconds": elapsed,
            "transitions_per_second": transitions / elapsed,
            "durable_commits_per_transition": (after["durable"] - before["durable"]) / transitions,
            "light_commits_per_transition": (after["light"] - before["light"]) / transitions,
            "handle_p50_ms": percentile(timed.durations, 0.5) * 1000,
            "handle_p99_ms": percentile(timed.durations, 0.99) * 1000,
        }
    finally:
        backend.close()


@contextmanager
def http_workers(directory: Path, count: int, key: str) -> Iterator[list[str]]:
    """Start ``count`` functions-framework worker processes serving the bench saga."""
    env = {
        **os.environ,
        "RELAY_DATA_DIR": str(directory),
        "RELAY_SIGNING_KEY": key,
        "RELAY_SAGA_MODULES": f"noop={SAGA_MODULE}:saga",
        "RELAY_SAGAS": "noop",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("RELAY_FAULTS", None)
    binary = Path(sys.executable).with_name("functions-framework")
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        str(binary),
                        "--asgi",
                        "--source",
                        str(ROOT / "functions" / "gcp.py"),
                        "--target",
                        "worker",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"worker at {url} did not start")
                time.sleep(0.05)
        yield [f"{url}/v1/steps" for url in urls]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def http_phase(
    directory: Path, *, runs: int, steps: int, concurrency: int, workers: int
) -> dict[str, Any]:
    """Throughput with signed HTTP deliveries to worker processes."""
    key = "bench-signing-key-not-secret"
    backend = Backend(directory, steps)
    try:
        run_ids = backend.start_runs(runs)
        before = backend.database.commit_counts()
        with http_workers(directory, workers, key) as urls:
            started = time.perf_counter()
            dispatcher = Dispatcher(
                SQLiteTaskQueue(backend.database),
                HttpDelivery(urls, key.encode()),
                concurrency=concurrency,
            )
            elapsed = asyncio.run(drive(backend, dispatcher, run_ids))
            del started
        after = backend.database.commit_counts()
        transitions = runs * steps
        # Worker processes write through their own SQLiteDatabase, whose counters we
        # cannot read; only the dispatcher's side is counted here.
        return {
            "transitions": transitions,
            "seconds": elapsed,
            "transitions_per_second": transitions / elapsed,
            "workers": workers,
            "dispatcher_light_commits_per_transition": (after["light"] - before["light"])
            / transitions,
        }
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--http-workers", type=int, default=2)
    parser.add_argument("--overhead-runs", type=int, default=100)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "runs": args.runs,
        "steps": args.steps,
        "concurrency": args.concurrency,
    }
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        base = Path(tmp)
        for name in ("floor", "in_process", "overhead", "http"):
            (base / name).mkdir()
        results["floor_commits_per_second"] = raw_commit_rate(base / "floor")
        results["in_process"] = in_process_phase(
            base / "in_process", runs=args.runs, steps=args.steps, concurrency=args.concurrency
        )
        results["overhead"] = in_process_phase(
            base / "overhead", runs=args.overhead_runs, steps=args.steps, concurrency=1
        )
        if not args.skip_http:
            results["http"] = http_phase(
                base / "http",
                runs=args.runs,
                steps=args.steps,
                concurrency=args.concurrency,
                workers=args.http_workers,
            )
        # Measure the floor again at the end: the disk's fsync rate drifts on shared machines.
        results["floor_commits_per_second_after"] = raw_commit_rate(base / "floor", seconds=1.0)

    floor = statistics.mean(
        [results["floor_commits_per_second"], results["floor_commits_per_second_after"]]
    )
    results["floor_mean"] = floor
    results["in_process"]["ratio_to_floor"] = (
        results["in_process"]["transitions_per_second"] / floor
    )
    if "http" in results:
        results["http"]["ratio_to_floor"] = results["http"]["transitions_per_second"] / floor
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results)


def report(r: dict[str, Any]) -> None:
    ip, ov = r["in_process"], r["overhead"]
    print(
        f"embedded backend, {r['runs']} runs x {r['steps']} no-op steps, "
        f"{r['concurrency']} in flight"
    )
    print(
        f"  floor: raw SQLite WAL synchronous=FULL single-row commits/s: "
        f"{r['floor_commits_per_second']:.0f} (start), "
        f"{r['floor_commits_per_second_after']:.0f} (end)"
    )
    print(
        f"  in-process: {ip['transitions_per_second']:.0f} transitions/s = "
        f"{ip['ratio_to_floor']:.2f} x floor (target >= 0.2; DBOS ~0.06)"
    )
    print(
        f"    durable commits per transition: {ip['durable_commits_per_transition']:.2f} "
        f"(target <= 2); non-durable queue bookkeeping: {ip['light_commits_per_transition']:.2f}"
    )
    print(
        f"    per-delivery latency under load: p50 {ip['handle_p50_ms']:.2f} ms, "
        f"p99 {ip['handle_p99_ms']:.2f} ms"
    )
    print(
        f"  overhead per step, 1 in flight: p50 {ov['handle_p50_ms']:.2f} ms, "
        f"p99 {ov['handle_p99_ms']:.2f} ms (target p50 <= 1 ms; DBOS 2.7, Temporal 5.5); "
        f"{ov['durable_commits_per_transition']:.2f} durable commits per transition"
    )
    if "http" in r:
        h = r["http"]
        print(
            f"  over HTTP ({h['workers']} functions-framework workers, signed): "
            f"{h['transitions_per_second']:.0f} transitions/s = {h['ratio_to_floor']:.2f} x floor"
        )


if __name__ == "__main__":
    main()
