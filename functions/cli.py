"""The ``relay`` command line: run the local stack, start and inspect runs, demo, chaos.

Commands that read or change runs talk to the local engine (``RELAY_DATA_DIR``) by
default; ``relay start --url`` goes through the HTTP API instead. JSON output
(``--json``) is exactly the HTTP API's view, so scripts can switch between the two.

Exit codes: 0 success; 1 the operation failed (run not found, wrong state, a check did
not pass); 2 the request was wrong (unknown saga, invalid input, bad option).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from functions.timeline import (
    TERMINAL_RUN_STATUSES,
    make_console,
    run_timeline,
    runs_table,
)

if TYPE_CHECKING:
    from core.domain.records import RunSnapshot
    from core.engine.engine import Engine
    from functions._settings import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2
RUN_STATUSES = (
    "PENDING",
    "RUNNING",
    "WAITING",
    "COMPLETED",
    "COMPENSATING",
    "COMPENSATED",
    "FAILED",
    "CANCELLED",
)


def _settings() -> Settings:
    from core.errors import ConfigurationError
    from functions._settings import Settings

    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        _fail(str(exc), code=EXIT_USAGE)


@contextmanager
def local_engine() -> Iterator[Engine]:
    """An engine on this machine's settings, closed (threads, connections) on exit.

    Each command builds its own instead of sharing ``get_engine()``'s cached one: the
    CLI is short-lived, and tests invoke it many times with different environments.
    """
    from functions._wiring import build_engine

    engine = build_engine(_settings())
    try:
        yield engine
    finally:
        engine.close()


def snapshot_view(engine: Engine, snapshot: RunSnapshot) -> dict[str, Any]:
    """The ``GET /v1/runs/{id}`` view of ``snapshot``, steps in definition order."""
    from functions.views import run_view

    return run_view(snapshot, [step.name for step in engine.ordered_steps(snapshot)])


def _fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    make_console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Relay: crash-safe sagas as stateless functions, here on the embedded backend.

    State lives in RELAY_DATA_DIR (default ./.relay).
    """


# -- relay dev ---------------------------------------------------------------------------


@main.command()
@click.option("--port", default=8080, show_default=True, help="HTTP port of the API.")
@click.option("--workers", default=2, show_default=True, help="Worker processes.")
@click.option(
    "--in-process", is_flag=True, help="Run steps inside the API process (no HTTP workers)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where state lives (default: RELAY_DATA_DIR or ./.relay).",
)
def dev(port: int, workers: int, in_process: bool, data_dir: Path | None) -> None:
    """Run the whole stack locally: HTTP API, queue dispatcher, workers, sweeper, scheduler."""
    from core.errors import EngineError
    from functions.dev import run_dev

    if workers < 1 and not in_process:
        raise click.BadParameter("at least one worker is needed", param_hint="--workers")
    try:
        run_dev(
            port=port,
            workers=workers,
            data_dir=data_dir or _settings().data_dir,
            in_process=in_process,
        )
    except EngineError as exc:  # a taken port, a worker that would not start, bad settings
        _fail(str(exc), code=EXIT_USAGE)


# -- relay start -------------------------------------------------------------------------


def _parse_input(text: str) -> Any:
    """``--input`` as JSON; ``@path`` reads the JSON from a file."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {text[1:]}: {exc}", param_hint="--input"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--input") from None


def _field_errors(saga: str, errors: list[dict[str, Any]]) -> NoReturn:
    console = make_console(stderr=True)
    console.print(f"[bold red]error:[/] input for saga {saga!r} is invalid:", highlight=False)
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())) or "<input>"
        console.print(f"  [bold]{where}[/]: {error.get('msg', error)}", highlight=False)
    sys.exit(EXIT_USAGE)


@main.command()
@click.argument("saga")
@click.option("--input", "input_text", required=True, help="Run input as JSON (or @file.json).")
@click.option("--idempotency-key", default=None, help="The same key always names the same run.")
@click.option("--wait", is_flag=True, help="Wait until the run ends and show its timeline.")
@click.option("--url", default=None, help="Start through the HTTP API at this base URL.")
@click.option("--timeout", default=60.0, show_default=True, help="Longest --wait, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def start(
    *,
    saga: str,
    input_text: str,
    idempotency_key: str | None,
    wait: bool,
    url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a run of SAGA with the given input (idempotent with --idempotency-key)."""
    raw_input = _parse_input(input_text)
    if url:
        from functions.remote import RemoteRuns

        with RemoteRuns(url) as remote:
            run_id = remote.start(saga, raw_input, idempotency_key=idempotency_key)
            view = remote.wait(run_id, timeout_seconds=timeout) if wait else None
    else:
        run_id = _start_locally(saga, raw_input, idempotency_key)
        view = _wait_locally(run_id, timeout) if wait else None
    if view is None:
        if as_json:
            _print_json({"run_id": run_id})
        else:
            click.echo(run_id)
        return
    if as_json:
        _print_json(view)
    else:
        make_console().print(run_timeline(view))
    if view["status"] not in TERMINAL_RUN_STATUSES:
        _fail(
            f"run {run_id} is still {view['status']} after {timeout:g}s; is `relay dev` "
            "running on the same RELAY_DATA_DIR?"
        )


def _start_locally(saga: str, raw_input: Any, idempotency_key: str | None) -> str:
    from core.errors import (
        IdempotencyKeyReusedError,
        InputValidationError,
        UnknownSagaError,
    )

    with local_engine() as engine:
        try:
            result = engine.runs.start(saga, raw_input, idempotency_key=idempotency_key)
        except UnknownSagaError as exc:
            _fail(str(exc), code=EXIT_USAGE)
        except InputValidationError as exc:
            _field_errors(saga, exc.errors)
        except IdempotencyKeyReusedError as exc:
            _fail(str(exc), code=EXIT_USAGE)
    if not result.is_created:
        make_console(stderr=True).print(
            f"[dim]idempotency key {idempotency_key!r} already started this run[/]"
        )
    return str(result.run.run_id)


def _wait_locally(run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with local_engine() as engine:
        while True:
            snapshot = engine.runs.get(run_id)
            if snapshot.run.status.is_terminal or time.monotonic() >= deadline:
                return snapshot_view(engine, snapshot)
            time.sleep(0.1)


# -- relay publish -----------------------------------------------------------------------


@main.command()
@click.argument("topic")
@click.option("--data", "data_text", default="{}", show_default=True, help="Event data as JSON.")
@click.option(
    "--id", "event_id", default=None, help="Event id; a redelivered id starts and resumes nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def publish(*, topic: str, data_text: str, event_id: str | None, as_json: bool) -> None:
    """Publish an event on TOPIC: start subscribed sagas, resume runs waiting for it.

    The same path Pub/Sub and EventBridge deliveries take in the cloud, so a saga's
    ``on_event`` and ``wait_for_event`` can be tried locally (with ``relay dev`` running
    on the same RELAY_DATA_DIR to carry the resumed runs on).
    """
    import secrets

    data = _parse_input(data_text)
    with local_engine() as engine:
        try:
            outcome = engine.triggers.publish(
                topic=topic, data=data, event_id=event_id or f"cli-{secrets.token_hex(8)}"
            )
        except ValueError as exc:  # a malformed topic or id
            _fail(str(exc), code=EXIT_USAGE)
    started = [str(result.run.run_id) for result in outcome.started]
    if as_json:
        _print_json({"started": started, "resumed": outcome.resumed, "rejected": outcome.rejected})
        return
    for run_id in started:
        click.echo(f"started {run_id}")
    for run_id in outcome.resumed:
        click.echo(f"resumed {run_id}")
    for saga, reason in outcome.rejected.items():
        click.echo(f"rejected by {saga}: {reason}", err=True)
    if not (started or outcome.resumed or outcome.rejected):
        click.echo(f"no saga starts on {topic!r} and no run waits for this event")


# -- relay runs ... ----------------------------------------------------------------------


@main.group()
def runs() -> None:
    """List, show, retry and cancel runs in the local store."""


@runs.command("list")
@click.option("--saga", default=None, help="Only runs of this saga.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES, case_sensitive=False),
    help="Only runs in this status (repeatable).",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def list_runs(saga: str | None, statuses: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Run headers, newest first."""
    from core.domain.status import RunStatus
    from functions.views import run_header_view

    wanted = [RunStatus(s.upper()) for s in statuses] or None
    with local_engine() as engine:
        headers = [
            run_header_view(run)
            for run in engine.runs.list(saga=saga, statuses=wanted, limit=limit)
        ]
    if as_json:
        _print_json({"runs": headers})
        return
    console = make_console()
    if not headers:
        console.print("[dim]no runs[/]")
        return
    console.print(runs_table(headers))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print GET /v1/runs/{id} instead.")
def show_run(run_id: str, as_json: bool) -> None:
    """One run: its steps as a timeline, its error, input and output."""
    from core.errors import RunNotFoundError

    with local_engine() as engine:
        try:
            view = snapshot_view(engine, engine.runs.get(run_id))
        except RunNotFoundError as exc:
            _fail(str(exc))
    if as_json:
        _print_json(view)
    else:
        make_console().print(run_timeline(view))


@runs.command("retry")
@click.argument("run_id")
def retry_run(run_id: str) -> None:
    """Resume a FAILED run where it stopped, with fresh retry budgets."""
    _change_run(run_id, "retry")


@runs.command("cancel")
@click.argument("run_id")
def cancel_run(run_id: str) -> None:
    """Stop an active run: undo its finished steps, then end CANCELLED."""
    _change_run(run_id, "cancel")


def _change_run(run_id: str, operation: str) -> None:
    from core.errors import ConcurrencyConflict, InvalidRunStateError, RunNotFoundError

    with local_engine() as engine:
        action = engine.runs.retry if operation == "retry" else engine.runs.cancel
        try:
            run = action(run_id)
        except (RunNotFoundError, InvalidRunStateError, ConcurrencyConflict) as exc:
            _fail(str(exc))
    make_console().print(
        f"run [bold]{run_id}[/] is now [bold]{run.status.value}[/]; "
        "a running `relay dev` on this data dir carries it on",
        highlight=False,
    )


# -- relay demo / manifest / chaos -------------------------------------------------------


@main.command()
@click.option("--runs", "count", default=12, show_default=True, type=click.IntRange(3, 500))
@click.option("--seed", default=7, show_default=True, help="Seed of the demo inputs.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A fresh directory for the demo (default: RELAY_DATA_DIR/demo-<timestamp>).",
)
@click.option("--timeout", default=45.0, show_default=True, help="Longest wait for the runs.")
def demo(count: int, seed: int, workers: int, data_dir: Path | None, timeout: float) -> None:
    """Run the order saga end to end: some orders complete, some compensate."""
    from functions.demo_command import run_demo

    target = data_dir or _settings().data_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    sys.exit(run_demo(count=count, seed=seed, workers=workers, data_dir=target, timeout=timeout))


@main.command()
def manifest() -> None:
    """Print the bundle manifest (functions, sagas, queues, schedules) as JSON."""
    from core.registry import SagaRegistry
    from functions.manifest import build_manifest

    registry = SagaRegistry(dict(_settings().saga_modules))
    _print_json(build_manifest(registry))


@main.command()
@click.option("--target", required=True, type=click.Choice(["gcp", "aws"]))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Directory of the archive (and of the aws pip build).",
)
@click.option(
    "--arch",
    type=click.Choice(["x86_64", "arm64"]),
    default="x86_64",
    show_default=True,
    help="aws: the Lambda architecture whose wheels pip installs.",
)
@click.option(
    "--python-version",
    default="3.12",
    show_default=True,
    help="aws: the CPython of the Lambda runtime whose wheels pip installs.",
)
@click.option(
    "--without-boto3",
    is_flag=True,
    help="aws: leave boto3/botocore out and use the Lambda runtime's own.",
)
def package(
    *, target: str, out_dir: Path, arch: str, python_version: str, without_boto3: bool
) -> None:
    """Build the deployable archive: Cloud Run functions source (gcp) or Lambda zip (aws)."""
    from functions.package.archive import build_package
    from functions.package.locks import PackagingError

    try:
        built = build_package(
            "gcp" if target == "gcp" else "aws",
            out_dir,
            python_version=python_version,
            arch="arm64" if arch == "arm64" else "x86_64",
            include_boto3=not without_boto3,
        )
    except PackagingError as exc:
        from rich.markup import escape

        _fail(escape(str(exc)))  # pip's messages hold brackets rich would read as markup
    click.echo(f"archive  {built.path}")
    click.echo(f"size     {built.size_bytes} bytes ({built.size_bytes / 2**20:.1f} MiB)")
    click.echo(f"entries  {built.entries}")
    click.echo(f"sha256   {built.sha256}")


@main.command()
@click.argument("saga")
@click.option("--runs", "count", required=True, type=click.IntRange(1, 100_000))
@click.option("--faults", default=None, help="RELAY_FAULTS for the stack (default per saga).")
@click.option("--kill-stack-once", is_flag=True, help="SIGKILL the whole stack mid-campaign.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 32))
@click.option("--timeout", default=600.0, show_default=True, help="Longest campaign, seconds.")
@click.option("--seed", default=7, show_default=True, help="Seed of inputs and faults.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A fresh directory for the campaign (default: a new temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def chaos(
    *,
    saga: str,
    count: int,
    faults: str | None,
    kill_stack_once: bool,
    workers: int,
    timeout: float,
    seed: int,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Drive N runs of SAGA through a faulty stack, then check every run and invariant."""
    from functions.chaos import CampaignConfig, run_campaign

    config = CampaignConfig(
        saga=saga,
        runs=count,
        faults=faults,
        kill_stack_once=kill_stack_once,
        workers=workers,
        timeout_seconds=timeout,
        seed=seed,
        data_dir=data_dir,
    )
    sys.exit(run_campaign(config, as_json=as_json))


if __name__ == "__main__":  # ``python -m functions.cli``: what chaos uses to start the stack
    main()
