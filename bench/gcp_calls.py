"""Firestore and Cloud Tasks calls per step transition on the GCP backend, counted on the emulators.

N runs of the order saga (``functions/sagas/order.py``; every fourth input carries the
declined payment token, so those runs compensate) go through the real ``Engine`` wired as
``functions/wiring.py`` wires the gcp backend: ``FirestoreStateStore`` on the Firestore
emulator and ``CloudTasksQueue`` on the Cloud Tasks emulator. Every RPC is counted at the
gRPC level by a client interceptor on both channels (nothing is stubbed): RPCs per method,
documents written per ``Commit`` (``len(request.writes)``), documents returned by
``BatchGetDocuments`` and ``RunQuery``.

Deliveries: the tasks' worker URL is a closed port, so the emulator's own POSTs fail and
are dropped (``--max-retries=0``). The interceptor keeps every task the emulator accepted
and this script hands each to ``engine.handle`` in due order (``not_before``),
redelivering what the engine answers "retry later" for, as Cloud Tasks would. A task
whose name was used before is not delivered again: Cloud Tasks refuses such a name for
about an hour (ALREADY_EXISTS), but the emulator forgets the names of dispatched tasks
and accepts it, so the bench counts the call and drops the task itself.
``--duplicates P`` delivers a random fraction P of the deliveries twice (at-least-once
delivery; seeded), to show what a re-drive costs.

A *step transition* is the start of a run (one ``create_run``) or one handled delivery
whose execute or compensate attempt committed (``Outcome.COMMITTED``).
Deliveries that only re-drive or are told to retry later are counted in the totals but
are not transitions. Calls are attributed to the store or queue operation that made them:
start (``create_run`` and its enqueue), load (``load_run``), claim (an ``apply`` that
takes a lease), commit (any other ``apply``), enqueue (the follow-up ``CreateTask``).

Run: ``python -m bench.gcp_calls [--runs 20] [--duplicates 0.25] [--json]``
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import socket
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._gcp_emulators import LOCATION, PROJECT, firestore_emulator, tasks_emulator
from bench._grpc_counting import (
    LabelledQueue,
    LabelledStore,
    RpcCounter,
    counting_firestore_client,
    counting_tasks_client,
)
from core.domain.records import Message, RunId
from core.domain.status import RunStatus
from core.engine.engine import Engine
from core.engine.saga_runner import Outcome
from core.registry import SagaRegistry

if TYPE_CHECKING:
    from google.cloud import tasks_v2

SERVICE_ACCOUNT = "relay-tasks@relay-bench.iam.gserviceaccount.com"
OPERATIONS = ("start", "load", "claim", "commit", "enqueue", "other")
READ_METHODS = ("BatchGetDocuments", "RunQuery")
# List prices assumed for the cost line (USD): Firestore Native, nam5 multi-region, per
# 100,000 documents; Cloud Tasks per million billable operations (API calls and pushes).
FIRESTORE_READ_USD_PER_100K = 0.06
FIRESTORE_WRITE_USD_PER_100K = 0.18
CLOUD_TASKS_USD_PER_MILLION = 0.40


# -- the run ---------------------------------------------------------------------------


def order_inputs(count: int) -> list[dict[str, Any]]:
    """Valid orders; every fourth is charged with the declined token (it compensates)."""
    from functions.demo_services import payments
    from functions.demo_services.db import CATALOGUE

    skus = [entry.sku for entry in CATALOGUE]
    return [
        {
            "customer_id": f"bench-{number:04d}",
            "email": f"customer{number}@example.com",
            "items": [{"sku": skus[number % len(skus)], "quantity": 1 + number % 3}],
            "payment_token": (payments.DECLINED_TOKEN if number % 4 == 3 else payments.GOOD_TOKEN),
        }
        for number in range(count)
    ]


def closed_port_url() -> str:
    """A worker URL nothing listens on: the emulator's POSTs fail and are dropped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/steps"


@dataclass
class Results:
    """What the bench run counted."""

    runs: int
    transitions: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    by_operation: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_run: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    run_status: dict[str, str] = field(default_factory=dict)
    attempts_by_run: dict[str, int] = field(default_factory=dict)
    reused_task_names: int = 0
    seconds: float = 0.0

    def add(self, run_id: str, tallies: Mapping[str, Counter[str]], *, kind: str) -> None:
        for label, tally in tallies.items():
            self.by_operation[f"{kind}:{label}"].update(tally)
            self.by_run[run_id].update(tally)


def build_engine(
    firestore_host: str, tasks_host: str, counter: RpcCounter
) -> tuple[Engine, tasks_v2.CloudTasksClient, str]:
    """The engine as ``functions/wiring.py`` builds it for RELAY_BACKEND=gcp, counted."""
    from google.cloud import tasks_v2

    from functions.sagas.order import saga
    from functions.wiring import step_dispatch_deadlines, step_queue_paths
    from infra.gcp.cloud_tasks import CloudTasksQueue
    from infra.gcp.firestore import FirestoreStateStore

    registry = SagaRegistry({"order": saga})
    tasks_client = counting_tasks_client(tasks_host, counter)
    queue_path = f"projects/{PROJECT}/locations/{LOCATION}/queues/relay-bench"
    tasks_client.create_queue(
        parent=queue_path.rsplit("/queues/", 1)[0], queue=tasks_v2.Queue(name=queue_path)
    )
    queue = CloudTasksQueue(
        tasks_client,
        queue_path=queue_path,
        worker_url=closed_port_url(),
        service_account_email=SERVICE_ACCOUNT,
        dispatch_deadline=step_dispatch_deadlines(registry),
        queue_for=step_queue_paths(registry, {}),
    )
    store = FirestoreStateStore(counting_firestore_client(firestore_host, counter))
    engine = Engine(
        registry=registry,
        store=LabelledStore(store, counter),
        queue=LabelledQueue(queue, counter),
    )
    return engine, tasks_client, queue_path


def run_bench(
    runs: int, firestore_host: str, tasks_host: str, *, duplicates: float = 0.0
) -> Results:
    """Start ``runs`` order runs and deliver every task until the queue is empty.

    With ``duplicates`` P > 0, a fraction P of the deliveries (chosen at random, seeded) is
    delivered once more right after (at-least-once delivery), so the cost of a re-drive
    shows up in its own row.
    """
    counter = RpcCounter()
    engine, tasks_client, queue_path = build_engine(firestore_host, tasks_host, counter)
    results = Results(runs=runs)
    # (due at, tie-breaker, message, is a duplicate delivery)
    due: list[tuple[float, int, Message, bool]] = []
    sequence = itertools.count()
    rng = random.Random(7)
    task_names: set[str] = set()

    def collect_tasks() -> None:
        for task in counter.created_tasks:
            # Cloud Tasks refuses a name used less than about an hour ago (ALREADY_EXISTS);
            # the emulator forgets the names of tasks it has dispatched and accepts them
            # again. Such a task is counted but, as in production, not delivered again.
            if task.name in task_names:
                results.reused_task_names += 1
                continue
            task_names.add(task.name)
            message = Message.from_json(json.loads(task.http_request.body))
            heapq.heappush(due, (message.not_before or 0.0, next(sequence), message, False))
        counter.created_tasks.clear()

    counter.take()  # queue creation and client set-up are not the engine's calls
    started = time.perf_counter()
    try:
        for raw in order_inputs(runs):
            with counter.labelled("start"):
                started_run = engine.runs.start("order", raw).run.run_id
            results.transitions += 1
            results.add(started_run, counter.take(), kind="start")
            collect_tasks()
        while due:
            not_before, _, message, is_duplicate = heapq.heappop(due)
            wait = not_before - time.time()
            if wait > 0:
                time.sleep(wait)
            outcome = engine.handle(message)
            if not is_duplicate and rng.random() < duplicates:
                heapq.heappush(due, (0.0, next(sequence), message, True))
            if not outcome.is_done:
                kind = "retry later"
                retry_at = time.time() + outcome.retry_after_seconds
                heapq.heappush(due, (retry_at, next(sequence), message, is_duplicate))
            elif outcome.outcome is Outcome.COMMITTED:
                kind = "committed"
                results.transitions += 1
            elif outcome.outcome is Outcome.REDRIVEN:
                kind = "re-drive"
            else:
                kind = "other ack"
            results.deliveries[kind] += 1
            results.add(message.run_id, counter.take(), kind=kind)
            collect_tasks()
        results.seconds = time.perf_counter() - started
        counter.label = "setup"
        for run_id in list(results.by_run):
            snapshot = engine.store.load_run(run_id=RunId(run_id))
            assert snapshot is not None
            results.run_status[run_id] = snapshot.run.status.value
            results.attempts_by_run[run_id] = sum(s.attempt for s in snapshot.steps.values())
    finally:
        engine.close()
        tasks_client.delete_queue(name=queue_path)
        tasks_client.transport.close()  # type: ignore[no-untyped-call]
    return results


# -- report ----------------------------------------------------------------------------


def _rpc_total(tally: Counter[str], methods: Sequence[str] | None = None) -> int:
    return sum(
        n
        for key, n in tally.items()
        if key.startswith("rpc ") and (methods is None or key[4:] in methods)
    )


def summarize(results: Results) -> dict[str, Any]:
    """Per-operation and per-transition figures, and billable operations per run."""
    total: Counter[str] = Counter()
    for tally in results.by_operation.values():
        total.update(tally)
    # Rows: the operations of run starts and committed deliveries, then every other kind
    # of delivery (re-drive, retry later) as one row with all its calls.
    operations: dict[str, dict[str, int]] = {}
    for label in OPERATIONS:
        merged: Counter[str] = Counter()
        for key, tally in results.by_operation.items():
            kind, _, operation = key.partition(":")
            if kind in ("start", "committed") and operation == label:
                merged.update(tally)
        if merged:
            operations[label] = dict(merged)
    for kind in sorted(results.deliveries):
        if kind == "committed":
            continue
        merged = Counter()
        for key, tally in results.by_operation.items():
            if key.partition(":")[0] == kind:
                merged.update(tally)
        operations[f"{kind} dlv."] = dict(merged)
    statuses = Counter(results.run_status.values())
    completed = [r for r, s in results.run_status.items() if s == RunStatus.COMPLETED.value]

    def billable(run_id: str) -> int:
        tally = results.by_run[run_id]
        return tally["billed reads"] + tally["docs written"]

    per_completed = [billable(r) for r in completed]
    compensated = [r for r, s in results.run_status.items() if s == RunStatus.COMPENSATED.value]
    transitions = results.transitions
    return {
        "runs": results.runs,
        "run_statuses": dict(statuses),
        "transitions": transitions,
        "step_attempts": sum(results.attempts_by_run.values()),
        "deliveries": dict(results.deliveries),
        "reused_task_names": results.reused_task_names,
        "seconds": results.seconds,
        "totals": dict(total),
        "by_operation": operations,
        "per_transition": {
            "rpcs": _rpc_total(total) / transitions,
            "firestore_read_rpcs": _rpc_total(total, READ_METHODS) / transitions,
            "firestore_commit_rpcs": total["rpc Commit"] / transitions,
            "docs_read": total["docs read"] / transitions,
            "billed_reads": total["billed reads"] / transitions,
            "docs_written": total["docs written"] / transitions,
            "create_task_calls": total["rpc CreateTask"] / transitions,
        },
        "per_completed_run": {
            "runs": len(completed),
            "billed_reads": _mean([results.by_run[r]["billed reads"] for r in completed]),
            "docs_written": _mean([results.by_run[r]["docs written"] for r in completed]),
            "billable_firestore_ops": _mean(per_completed),
            "billable_firestore_ops_min_max": [min(per_completed), max(per_completed)]
            if per_completed
            else None,
            "create_task_calls": _mean([results.by_run[r]["rpc CreateTask"] for r in completed]),
        },
        "per_compensated_run": {
            "runs": len(compensated),
            "billable_firestore_ops": _mean([billable(r) for r in compensated]),
            "create_task_calls": _mean([results.by_run[r]["rpc CreateTask"] for r in compensated]),
        },
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def print_report(summary: dict[str, Any]) -> None:
    """The tables, in plain text."""
    transitions = summary["transitions"]
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary["run_statuses"].items()))
    deliveries = summary["deliveries"]
    print(
        "GCP backend: Firestore + Cloud Tasks calls per step transition, counted at the gRPC "
        "level on the emulators"
    )
    print(f"  order saga, {summary['runs']} runs ({statuses}) in {summary['seconds']:.1f} s")
    print(
        f"  step transitions: {transitions} = {summary['runs']} run starts + "
        f"{deliveries.get('committed', 0)} deliveries whose attempt committed "
        f"(step attempts recorded: {summary['step_attempts']})"
    )
    print(
        "  deliveries handled: "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(deliveries.items()))
    )
    print()
    header = (
        f"  {'per transition':<16}{'RPCs':>7}{'BatchGet':>10}{'RunQuery':>10}{'Commit':>8}"
        f"{'CreateTask':>12}{'docs read':>11}{'billed rd':>11}{'docs wrtn':>11}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    rows = [*summary["by_operation"].items(), ("total", summary["totals"])]
    for label, tally in rows:
        counts = Counter(tally)
        cells = [
            _rpc_total(counts),
            counts["rpc BatchGetDocuments"],
            counts["rpc RunQuery"],
            counts["rpc Commit"],
            counts["rpc CreateTask"],
            counts["docs read"],
            counts["billed reads"],
            counts["docs written"],
        ]
        widths = (7, 10, 10, 8, 12, 11, 11, 11)
        text = "".join(f"{c / transitions:>{w}.2f}" for c, w in zip(cells, widths, strict=True))
        print(f"  {label:<16}{text}")
    totals = Counter(summary["totals"])
    print(
        f"  (absolute totals: {_rpc_total(totals)} RPCs, {totals['docs read']} documents read, "
        f"{totals['billed reads']} billed reads, {totals['docs written']} documents written, "
        f"{totals['rpc CreateTask']} CreateTask, {totals['rejected commits']} rejected commits)"
    )
    for label, tally in summary["by_operation"].items():
        kind = label.removesuffix(" dlv.")
        if kind == label:
            continue
        count = summary["deliveries"][kind]
        counts = Counter(tally)
        print(
            f"  one {kind} delivery costs {_rpc_total(counts) / count:.2f} RPCs: "
            f"{_rpc_total(counts, READ_METHODS) / count:.2f} reads "
            f"({counts['billed reads'] / count:.2f} billed documents), "
            f"{counts['rpc Commit'] / count:.2f} Commit, "
            f"{counts['rpc CreateTask'] / count:.2f} CreateTask "
            f"({counts['CreateTask already exists'] / count:.2f} refused: ALREADY_EXISTS); "
            f"{count} such deliveries"
        )
    if summary["reused_task_names"]:
        print(
            f"  {summary['reused_task_names']} CreateTask calls re-used the name of a task "
            "already dispatched: the emulator accepted them (it forgets dispatched names); "
            "Cloud Tasks would refuse them with ALREADY_EXISTS, so they were not delivered"
        )
    kinds = ", ".join(
        f"{totals[key] / transitions:.2f} {key.removeprefix('written: ')}s"
        for key in sorted(totals)
        if key.startswith("written: ")
    )
    print(f"  documents written per transition, by kind: {kinds}")
    per = summary["per_transition"]
    print()
    print(
        "  against DESIGN.md's budget per transition (2 state writes, 1 read, 1 enqueue): "
        f"{per['firestore_commit_rpcs']:.2f} Commit RPCs ({per['docs_written']:.2f} documents), "
        f"{per['firestore_read_rpcs']:.2f} read RPCs ({per['billed_reads']:.2f} billed "
        f"document reads), {per['create_task_calls']:.2f} CreateTask"
    )
    run = summary["per_completed_run"]
    low_high = run["billable_firestore_ops_min_max"] or [0, 0]
    print(
        "  billable Firestore operations per COMPLETED 5-step run: "
        f"{run['billable_firestore_ops']:.1f}"
        f" ({run['billed_reads']:.1f} document reads + {run['docs_written']:.1f} document writes;"
        f" min {low_high[0]}, max {low_high[1]}; {run['runs']} runs), plus"
        f" {run['create_task_calls']:.1f} CreateTask"
    )
    comp = summary["per_compensated_run"]
    if comp["runs"]:
        print(
            f"  billable Firestore operations per COMPENSATED run: "
            f"{comp['billable_firestore_ops']:.1f}, plus {comp['create_task_calls']:.1f} CreateTask"
            f" ({comp['runs']} runs)"
        )
    cost = (
        per["billed_reads"] * FIRESTORE_READ_USD_PER_100K * 10
        + per["docs_written"] * FIRESTORE_WRITE_USD_PER_100K * 10
        + 2 * per["create_task_calls"] * CLOUD_TASKS_USD_PER_MILLION
    )
    print(
        f"  list-price estimate: ${cost:.2f} per million transitions (Firestore nam5 "
        f"${FIRESTORE_READ_USD_PER_100K}/100k reads, ${FIRESTORE_WRITE_USD_PER_100K}/100k "
        f"writes; Cloud Tasks ${CLOUD_TASKS_USD_PER_MILLION}/M operations, CreateTask + "
        "push each; free tiers and Cloud Run ignored)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--duplicates",
        type=float,
        default=0.0,
        metavar="P",
        help="deliver this fraction of the deliveries twice, to count what a re-drive costs",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-gcp-calls-") as tmp:
        # The demo services behind the order saga keep their own SQLite file here.
        os.environ["RELAY_DATA_DIR"] = tmp
        os.environ.pop("RELAY_FAULTS", None)
        with (
            firestore_emulator(Path(tmp)) as firestore_host,
            tasks_emulator(Path(tmp)) as tasks_host,
        ):
            results = run_bench(args.runs, firestore_host, tasks_host, duplicates=args.duplicates)
            summary = summarize(results)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print_report(summary)


if __name__ == "__main__":
    main()
