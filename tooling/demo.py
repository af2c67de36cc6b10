"""``relay demo``: the example sagas end to end on a fresh stack, and what they did.

It starts ``relay dev`` (HTTP API, queue dispatcher, sweeper and worker processes that
receive signed deliveries, as Cloud Tasks would send them) on a fresh data directory,
starts order runs over HTTP (most complete; a declined payment or an unknown SKU makes
some compensate), one onboarding run and one run of the ETL pipeline
(``functions/pipelines/etl.py``), waits for them, stops the stack, and then shows the
runs, the timelines of one completed and one compensated order with what each did to the
demo services, the pipeline's timeline with its result, and the result of every invariant
the sagas declare.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from infra.local.runtime.supervisor import free_port
from tooling.checks import CheckReport
from tooling.local_stack import StackError, StackProcess
from tooling.remote import RemoteError, RemoteRuns
from tooling.timeline import TERMINAL_RUN_STATUSES, make_console, run_timeline, runs_table

ONBOARDING_INPUT: Final = {"email": "ada@example.com", "name": "Ada Lovelace"}
ETL_INPUT: Final = {"row_count": 500, "seed": 11}
"""The pipeline's input: 500 generated sales rows (its tasks run in parallel levels)."""
_POLL_SECONDS: Final = 0.2


def run_demo(*, count: int, seed: int, workers: int, data_dir: Path, timeout: float) -> int:
    """Run the demo and return the exit code: 0 only when everything ended as it should.

    "As it should": every run COMPLETED or COMPENSATED, both outcomes occurred among the
    order runs, and every invariant (and the order ledger) holds.
    """
    from functions.sagas.order import demo_inputs

    console = make_console()
    if data_dir.exists() and any(data_dir.iterdir()):
        console.print(f"[bold red]error:[/] {data_dir} is not empty; the demo needs a fresh one")
        return 2
    requests: list[tuple[str, Any]] = [("order", item) for item in demo_inputs(count, seed)]
    requests.append(("onboarding", ONBOARDING_INPUT))
    requests.append(("etl", ETL_INPUT))
    console.print(
        Text.assemble(
            ("Relay demo", "bold"),
            f": {count} order runs, 1 onboarding run and 1 ETL pipeline run through `relay dev` "
            f"(HTTP API, dispatcher, sweeper, {workers} HTTP worker processes)\n",
            ("data: ", "dim"),
            str(data_dir.resolve()),
        )
    )
    began = time.monotonic()
    stack = StackProcess(data_dir=data_dir, port=free_port(), workers=workers)
    try:
        with stack:
            with console.status("starting the stack..."):
                stack.start()
            run_ids = _start_and_wait(console, stack, requests, seed=seed, timeout=timeout)
    except (StackError, RemoteError) as exc:
        console.print(f"[bold red]error:[/] {exc} (stack log: {stack.log_path})")
        return 1
    return _report(console, data_dir, run_ids, time.monotonic() - began)


def _start_and_wait(
    console: Console,
    stack: StackProcess,
    requests: Sequence[tuple[str, Any]],
    *,
    seed: int,
    timeout: float,
) -> list[str]:
    """Start every run over HTTP, then poll the API until all ended (or the timeout)."""
    deadline = time.monotonic() + timeout
    with (
        RemoteRuns(stack.url) as api,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[statuses]}"),
            console=console,
        ) as progress,
    ):
        starting = progress.add_task("starting runs", total=len(requests), statuses="")
        run_ids: list[str] = []
        for index, (saga, raw_input) in enumerate(requests):
            key = f"demo-{seed}-{index:04d}"
            run_ids.append(api.start_or_raise(saga, raw_input, idempotency_key=key))
            progress.advance(starting)
        finishing = progress.add_task("runs ended", total=len(run_ids), statuses="")
        wanted = set(run_ids)
        while True:
            headers = [h for h in api.list_runs(limit=len(run_ids) + 10) if h["run_id"] in wanted]
            counts: dict[str, int] = {}
            for header in headers:
                counts[header["status"]] = counts.get(header["status"], 0) + 1
            ended = sum(n for status, n in counts.items() if status in TERMINAL_RUN_STATUSES)
            progress.update(
                finishing,
                completed=ended,
                statuses=" ".join(f"{s}={n}" for s, n in sorted(counts.items())),
            )
            if ended >= len(run_ids) or time.monotonic() >= deadline:
                return run_ids
            time.sleep(_POLL_SECONDS)


def _report(console: Console, data_dir: Path, run_ids: Sequence[str], elapsed: float) -> int:
    """Read the stopped stack's store and print the runs, two timelines and the checks."""
    from functions.settings import Settings
    from functions.wiring import build_engine
    from tooling.checks import check_runs, demo_services_at
    from tooling.cli._common import snapshot_view

    engine = build_engine(Settings(data_dir=data_dir))
    try:
        checks = check_runs(engine, run_ids, data_dir=data_dir)
        views = {rid: snapshot_view(engine, checks.snapshots[rid]) for rid in run_ids}
    finally:
        engine.close()
    console.print(runs_table(list(views.values()), title="runs"))
    order_views = [v for v in views.values() if v["saga"] == "order"]
    completed = _pick(order_views, "COMPLETED")
    compensated = _pick(order_views, "COMPENSATED")
    with demo_services_at(data_dir):
        for view in (completed, compensated):
            if view is not None:
                console.print(run_timeline(view))
                console.print(_effects(view["run_id"]))
    pipeline = next((v for v in views.values() if v["saga"] == "etl"), None)
    if pipeline is not None:
        console.print(run_timeline(pipeline))
    console.print(_checks_table(checks))
    problems = [
        f"run {b['run_id']} ({b['saga']}) ended {b['status']}: {b['error']}"
        for b in checks.bad_endings
    ]
    problems += checks.invariant_violations + checks.ledger_violations
    if completed is None:
        problems.append("no order run COMPLETED")
    if compensated is None:
        problems.append("no order run COMPENSATED")
    if pipeline is None or pipeline["status"] != "COMPLETED":
        problems.append("the ETL pipeline run did not COMPLETE")
    for line in problems:
        console.print(f"[red]✗[/] {line}", highlight=False)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(checks.statuses.items()))
    if problems:
        console.print(f"[bold red]demo failed[/] after {elapsed:.1f}s ({counts})")
        return 1
    console.print(
        f"[bold green]✓[/] {len(run_ids)} runs in {elapsed:.1f}s ({counts}); every invariant "
        f"holds. Inspect them with `RELAY_DATA_DIR={data_dir} relay runs list`."
    )
    return 0


def _pick(views: Sequence[Mapping[str, Any]], status: str) -> Mapping[str, Any] | None:
    """The run in ``status`` with the most steps compensated (the most telling timeline)."""
    matching = [v for v in views if v["status"] == status]
    if not matching:
        return None
    return max(
        matching,
        key=lambda v: sum(1 for s in v["steps"] if s["status"] == "COMPENSATED"),
    )


def _effects(run_id: str) -> Table:
    """What the run did to the outside world (the demo services' journal), in order."""
    from functions.demo_services import db

    table = Table(
        title=f"effects of {run_id} on the demo services",
        title_justify="left",
        header_style="bold",
        box=None,
    )
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("service")
    table.add_column("action")
    table.add_column("detail")
    for entry in db.journal(f"{run_id}:"):
        step = entry.key.rpartition(":")[2]
        table.add_row(str(entry.seq), step, entry.service, entry.action, entry.detail)
    return table


def _checks_table(checks: CheckReport) -> Table:
    table = Table(title="invariants", title_justify="left", header_style="bold")
    table.add_column("check")
    table.add_column("runs", justify="right")
    table.add_column("result")
    for name, result in checks.invariant_results.items():
        verdict = (
            Text("holds", style="green")
            if not result["violated"]
            else Text(f"violated by {result['violated']} run(s)", style="bold red")
        )
        table.add_row(name, str(result["runs"]), verdict)
    for saga in checks.ledger_checked:
        verdict = (
            Text("balanced", style="green")
            if not checks.ledger_violations
            else Text(f"{len(checks.ledger_violations)} problem(s)", style="bold red")
        )
        table.add_row(f"{saga} ledger: stock conserved, money = completed orders", "all", verdict)
    return table
