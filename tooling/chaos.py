"""``relay chaos``: many runs through a stack that fails, crashes and duplicates on purpose.

A campaign starts ``relay dev`` on a fresh data directory with ``RELAY_FAULTS`` (step
failures, worker crashes before commit, duplicate deliveries), starts N runs over HTTP,
optionally SIGKILLs the whole stack once mid-campaign and restarts it on the same data
directory and port, waits for every run to end, and then checks, from the stores
themselves, that every run ended COMPLETED or COMPENSATED and that every invariant the
saga declares holds (``tooling.checks``).

Every start carries an ``Idempotency-Key``, so a start retried across the kill names the
same run; after the restart nothing is re-sent by hand: the durable queue and the
sweeper must carry every in-flight run to its end.
"""

from __future__ import annotations

import importlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.domain.run_ids import run_id_for_client_key
from core.domain.status import RunStatus
from core.engine.engine import Engine
from infra.local.runtime.supervisor import free_port
from tooling.local_stack import StackError, StackProcess
from tooling.timeline import make_console

DEFAULT_FAULTS: Final = "*:fail@0.2;*:crash@0.05;*:duplicate@0.1"
"""The issue's campaign: 20% step failures, 5% worker crashes, 10% duplicate deliveries."""
START_CONCURRENCY: Final = 8
POLL_SECONDS: Final = 0.5
KILL_WAIT_SECONDS: Final = 15.0
_TERMINAL: Final = frozenset(s.value for s in RunStatus if s.is_terminal)
_CRASH_LINE: Final = re.compile(r"RELAY_FAULTS: crashing worker")
_RESTART_LINE: Final = re.compile(r"gunicorn restarted it|; restarting")


@dataclass(frozen=True)
class CampaignConfig:
    """What ``relay chaos`` was asked to do."""

    saga: str
    runs: int
    faults: str | None = None
    kill_stack_once: bool = False
    workers: int = 2
    timeout_seconds: float = 600.0
    seed: int = 7
    data_dir: Path | None = None


@dataclass
class _Started:
    run_ids: dict[int, str]
    errors: list[str]


class ChaosSetupError(Exception):
    """Raised when a campaign cannot start (unknown saga, no inputs, used data dir)."""


def campaign_inputs(saga: str, count: int, seed: int) -> list[Any]:
    """Inputs for ``count`` runs: the saga module's ``demo_inputs(count, seed)``.

    Raises:
        ChaosSetupError: the saga is unknown or its module offers no ``demo_inputs``.
    """
    from core.errors import EngineError
    from functions.settings import Settings
    from functions.wiring import build_registry

    try:
        definition = build_registry(Settings.from_env()).get(saga)
    except EngineError as exc:
        raise ChaosSetupError(str(exc)) from None
    module = importlib.import_module(next(iter(definition.steps.values())).fn.__module__)
    make_inputs: Callable[[int, int], list[Any]] | None = getattr(module, "demo_inputs", None)
    if make_inputs is None:
        raise ChaosSetupError(
            f"saga {saga!r} ({module.__name__}) defines no demo_inputs(count, seed); "
            "chaos needs it to build run inputs"
        )
    return make_inputs(count, seed)


def run_campaign(config: CampaignConfig, *, as_json: bool = False) -> int:
    """Run the campaign, print its report, and return the exit code (0 when clean)."""
    from functions.settings import Settings
    from functions.wiring import build_engine

    console = make_console(stderr=True)
    try:
        inputs = campaign_inputs(config.saga, config.runs, config.seed)
        data_dir = _fresh_data_dir(config.data_dir)
    except ChaosSetupError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    faults = DEFAULT_FAULTS if config.faults is None else config.faults
    stack = StackProcess(data_dir=data_dir, port=free_port(), workers=config.workers, faults=faults)
    began = time.monotonic()
    deadline = began + config.timeout_seconds
    report: dict[str, Any] = {
        "saga": config.saga,
        "runs": config.runs,
        "faults": faults,
        "seed": config.seed,
        "workers": config.workers,
        "data_dir": str(data_dir),
        "kill": {"requested": config.kill_stack_once, "done": False},
    }
    console.print(
        f"chaos: {config.runs} runs of [bold]{config.saga}[/] with RELAY_FAULTS={faults!r}; "
        f"data in {data_dir}",
        highlight=False,
    )
    try:
        with stack:
            stack.start()
            engine = build_engine(Settings(data_dir=data_dir))
            try:
                started = _drive(
                    config=config,
                    inputs=inputs,
                    stack=stack,
                    engine=engine,
                    deadline=deadline,
                    report=report,
                    console=console,
                )
                is_finished = _wait_until_terminal(
                    config=config,
                    stack=stack,
                    engine=engine,
                    started=started,
                    deadline=deadline,
                    console=console,
                )
            finally:
                engine.close()
            report["unexpected_stack_exits"] = stack.starts - 1 - int(report["kill"]["done"])
    except StackError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    report["duration_seconds"] = round(time.monotonic() - began, 2)
    report["all_finished"] = is_finished
    report["start_errors"] = started.errors
    report["faults_observed"] = _faults_observed(stack.read_log())
    _check(config, data_dir, started, report)
    report["ok"] = bool(
        is_finished
        and not started.errors
        and report["checks"]["is_clean"]
        and (report["kill"]["done"] or not config.kill_stack_once)
    )
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    return 0 if report["ok"] else 1


def _fresh_data_dir(requested: Path | None) -> Path:
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="relay-chaos-"))
    if requested.exists() and any(requested.iterdir()):
        raise ChaosSetupError(
            f"data dir {requested} is not empty; a campaign needs a fresh one so the "
            "ledger check sees only its own runs"
        )
    requested.mkdir(parents=True, exist_ok=True)
    return requested


def _drive(
    *,
    config: CampaignConfig,
    inputs: Sequence[Any],
    stack: StackProcess,
    engine: Engine,
    deadline: float,
    report: dict[str, Any],
    console: Any,
) -> _Started:
    """Start every run over HTTP; with ``kill_stack_once``, kill and restart at half way."""
    started = _Started({}, [])
    keys = [f"chaos-{config.seed}-{index:06d}" for index in range(len(inputs))]
    halfway = len(inputs) // 2 if config.kill_stack_once else len(inputs)
    with (
        httpx.Client(base_url=stack.url, timeout=10.0, trust_env=False) as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        task = progress.add_task("starting runs", total=len(inputs))
        lock = threading.Lock()

        def start_one(index: int) -> None:
            outcome = _start_with_retries(client, config.saga, inputs[index], keys[index], deadline)
            with lock:
                if outcome.startswith("error:"):
                    started.errors.append(f"run #{index}: {outcome[6:]}")
                else:
                    started.run_ids[index] = outcome
                progress.advance(task)

        for batch in (range(halfway), range(halfway, len(inputs))):
            with ThreadPoolExecutor(START_CONCURRENCY) as pool:
                list(pool.map(start_one, batch))
            if batch.stop == halfway and config.kill_stack_once and halfway < len(inputs):
                # Kill while runs are mid-flight: some ended, most still stepping.
                ended = _wait_for_ended(
                    engine, config.saga, max(1, halfway // 4), KILL_WAIT_SECONDS
                )
                progress.console.print(
                    f"[bold red]SIGKILL[/] the whole stack after {halfway} starts "
                    f"({ended} runs ended); restarting it on the same data dir and port"
                )
                killed_at = time.monotonic()
                stack.kill()
                stack.start()
                report["kill"] = {
                    "requested": True,
                    "done": True,
                    "after_starts": halfway,
                    "runs_ended_before": ended,
                    "restart_seconds": round(time.monotonic() - killed_at, 2),
                }
    # A start whose answer was lost still created its run: the key names it.
    for index, key in enumerate(keys):
        started.run_ids.setdefault(index, run_id_for_client_key(config.saga, key))
    return started


def _ended_count(engine: Engine, saga: str) -> tuple[int, dict[str, int]]:
    counts = engine.store.count_runs_by_status(saga=saga)
    ended = sum(n for status, n in counts.items() if status.value in _TERMINAL)
    return ended, {status.value: n for status, n in sorted(counts.items()) if n}


def _wait_for_ended(engine: Engine, saga: str, wanted: int, timeout_seconds: float) -> int:
    """Wait until ``wanted`` runs ended or ``timeout_seconds`` passed; return how many did."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        ended, _ = _ended_count(engine, saga)
        if ended >= wanted or time.monotonic() >= deadline:
            return ended
        time.sleep(0.05)


def _start_with_retries(
    client: httpx.Client, saga: str, raw_input: Any, key: str, deadline: float
) -> str:
    """The run id, or ``"error: ..."``; transient failures are retried until ``deadline``."""
    last = "no attempt made"
    while time.monotonic() < deadline:
        try:
            response = client.post(
                f"/v1/sagas/{saga}/runs", json=raw_input, headers={"Idempotency-Key": key}
            )
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 202:
                return str(response.json()["run_id"])
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if 400 <= response.status_code < 500 and response.status_code != 429:
                return f"error: {last}"
        time.sleep(0.2)
    return f"error: gave up starting ({last})"


def _wait_until_terminal(
    *,
    config: CampaignConfig,
    stack: StackProcess,
    engine: Engine,
    started: _Started,
    deadline: float,
    console: Any,
) -> bool:
    """Poll the store until every run ended; restart the stack if it died on its own."""
    total = len(started.run_ids)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[statuses]}"),
        console=console,
    ) as progress:
        task = progress.add_task("runs finished", total=total, statuses="")
        while True:
            done, counts = _ended_count(engine, config.saga)
            progress.update(
                task,
                completed=min(done, total),
                statuses=" ".join(f"{s}={n}" for s, n in counts.items()),
            )
            if done >= total:
                return True
            if time.monotonic() >= deadline:
                return False
            if not stack.is_running:
                progress.console.print(
                    f"[yellow]the stack exited on its own (code {stack.exit_code()}); "
                    "restarting it[/]"
                )
                stack.kill()
                stack.start()
            time.sleep(POLL_SECONDS)


def _faults_observed(log_text: str) -> dict[str, int]:
    """What the stack's log says happened: crashes injected, workers restarted."""
    lines = log_text.splitlines()
    return {
        "worker_crashes": sum(1 for line in lines if _CRASH_LINE.search(line)),
        "worker_restarts": sum(1 for line in lines if _RESTART_LINE.search(line)),
    }


def _check(
    config: CampaignConfig, data_dir: Path, started: _Started, report: dict[str, Any]
) -> None:
    from functions.settings import Settings
    from functions.wiring import build_engine
    from tooling.checks import check_runs

    engine = build_engine(Settings(data_dir=data_dir))
    try:
        run_ids = [started.run_ids[i] for i in sorted(started.run_ids)]
        checks = check_runs(engine, run_ids, data_dir=data_dir)
    finally:
        engine.close()
    report["checks"] = checks.to_json()
    report["faults_observed"]["step_attempts"] = checks.step_attempts


def _print_report(report: dict[str, Any]) -> None:
    console = make_console()
    checks = report["checks"]
    table = Table(title=f"chaos: {report['runs']} runs of {report['saga']}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("faults", report["faults"])
    table.add_row("duration", f"{report['duration_seconds']} s")
    for status, count in checks["statuses"].items():
        table.add_row(f"  {status}", str(count))
    kill = report["kill"]
    table.add_row(
        "stack SIGKILLed",
        f"after {kill['after_starts']} starts; back in {kill['restart_seconds']} s"
        if kill.get("done")
        else "no",
    )
    for name, value in report["faults_observed"].items():
        table.add_row(name.replace("_", " "), str(value))
    for name, result in checks["invariants"].items():
        table.add_row(f"invariant {name}", f"{result['violated']} of {result['runs']} runs violate")
    table.add_row("ledger checked", ", ".join(checks["ledger_checked"]) or "-")
    console.print(table)
    problems: list[str] = []
    if not report["all_finished"]:
        problems.append("some runs did not end before the campaign timeout")
    problems += (
        [f"start failed: {e}" for e in report["start_errors"]]
        + [f"{b['run_id']} ended {b['status']}: {b['error']}" for b in checks["bad_endings"]]
        + checks["invariant_violations"]
        + checks["ledger_violations"]
    )
    for line in problems[:50]:
        console.print(f"[red]✗[/] {line}", highlight=False)
    verdict = "[bold green]clean[/]" if report["ok"] else "[bold red]NOT clean[/]"
    console.print(f"chaos campaign {verdict}; data kept in {report['data_dir']}")
