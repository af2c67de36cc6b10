"""The ``relay`` command line: run the local stack, start and inspect runs, demo, chaos, plan.

Commands that read or change runs talk to the local engine (``RELAY_DATA_DIR``) by
default; ``relay start --url`` goes through the HTTP API instead. JSON output
(``--json``) is exactly the HTTP API's view, so scripts can switch between the two.

Exit codes (``tooling/cli/_common.py``): 0 success; 1 the operation failed (run not
found, wrong state, still running at ``--timeout``, a check did not pass); 2 the request was
wrong (unknown saga, invalid input, bad option). ``relay start --wait`` also says how the
run ended: 0 COMPLETED, 3 COMPENSATED, 4 FAILED, 5 CANCELLED. ``relay publish`` exits 3
when every saga subscribed to the topic rejected the event and no waiting run took it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from tooling.cli._common import (
    EXIT_CODE_OF_STATUS,
    EXIT_REJECTED,
    EXIT_USAGE,
    exit_with_field_errors,
    fail,
    load_settings,
    local_engine,
    parse_json,
    print_json,
    snapshot_view,
)
from tooling.cli.bundle import COMMANDS
from tooling.cli.keys import keys
from tooling.cli.plan import plan
from tooling.cli.runs import runs
from tooling.timeline import TERMINAL_RUN_STATUSES, make_console, run_timeline


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Relay: crash-safe sagas as stateless functions, here on the embedded backend.

    State lives in RELAY_DATA_DIR (default ./.relay).
    """


# -- relay dev ---------------------------------------------------------------------------


@main.command()
@click.option("--port", default=8080, show_default=True, help="HTTP port of the API.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the API binds; beyond loopback the run API requires credentials "
    "(RELAY_API_AUTH).",
)
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
def dev(port: int, host: str, workers: int, in_process: bool, data_dir: Path | None) -> None:
    """Run the whole stack locally: HTTP API, queue dispatcher, workers, sweeper, scheduler."""
    from core.errors import EngineError
    from tooling.dev_stack import run_dev

    if workers < 1 and not in_process:
        raise click.BadParameter("at least one worker is needed", param_hint="--workers")
    try:
        run_dev(
            port=port,
            host=host,
            workers=workers,
            data_dir=data_dir or load_settings().data_dir,
            in_process=in_process,
        )
    except EngineError as exc:  # a taken port, a worker that would not start, bad settings
        fail(str(exc), code=EXIT_USAGE)


# -- relay start -------------------------------------------------------------------------


@main.command()
@click.argument("saga")
@click.option(
    "--input",
    "input_text",
    default="{}",
    show_default=True,
    help="Run input as JSON (or @file.json).",
)
@click.option("--idempotency-key", default=None, help="The same key always names the same run.")
@click.option("--wait", is_flag=True, help="Wait until the run ends and show its timeline.")
@click.option("--url", default=None, help="Start through the HTTP API at this base URL.")
@click.option(
    "--api-key",
    default=None,
    help="With --url: the API key to present (relay keys create); prefer @file to keep it "
    "out of the shell history.",
)
@click.option("--timeout", default=60.0, show_default=True, help="Longest --wait, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def start(
    *,
    saga: str,
    input_text: str,
    idempotency_key: str | None,
    wait: bool,
    url: str | None,
    api_key: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a run of SAGA (or pipeline) with the given input (idempotent with --idempotency-key).

    A pipeline is started by its name like a saga: ``relay start etl --wait``.
    """
    raw_input = parse_json(input_text)
    if url:
        from tooling.remote import RemoteRuns

        if api_key and api_key.startswith("@"):
            try:
                api_key = Path(api_key[1:]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise click.BadParameter(f"cannot read {api_key[1:]}: {exc}") from None
        with RemoteRuns(url, api_key=api_key) as remote:
            run_id = remote.start(saga, raw_input, idempotency_key=idempotency_key)
            view = remote.wait(run_id, timeout_seconds=timeout) if wait else None
    else:
        run_id = _start_locally(saga, raw_input, idempotency_key)
        view = _wait_locally(run_id, timeout) if wait else None
    if view is None:
        if as_json:
            print_json({"run_id": run_id})
        else:
            click.echo(run_id)
        return
    if as_json:
        print_json(view)
    else:
        make_console().print(run_timeline(view))
    if view["status"] not in TERMINAL_RUN_STATUSES:
        fail(
            f"run {run_id} is still {view['status']} after {timeout:g}s; is `relay dev` "
            "running on the same RELAY_DATA_DIR?"
        )
    code = EXIT_CODE_OF_STATUS[view["status"]]
    if code:
        make_console(stderr=True).print(
            f"[bold red]run {run_id} ended {view['status']}[/] (exit code {code})", highlight=False
        )
        sys.exit(code)


def _start_locally(saga: str, raw_input: Any, idempotency_key: str | None) -> str:
    from core.errors import (
        IdempotencyKeyReusedError,
        InputValidationError,
        InvalidIdempotencyKeyError,
        UnknownSagaError,
    )

    with local_engine() as engine:
        try:
            result = engine.runs.start(saga, raw_input, idempotency_key=idempotency_key)
        except UnknownSagaError as exc:
            fail(str(exc), code=EXIT_USAGE)
        except InputValidationError as exc:
            exit_with_field_errors(saga, exc.errors)
        except (IdempotencyKeyReusedError, InvalidIdempotencyKeyError) as exc:
            fail(str(exc), code=EXIT_USAGE)
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

    data = parse_json(data_text, option="--data")
    with local_engine() as engine:
        try:
            outcome = engine.triggers.publish(
                topic=topic, data=data, event_id=event_id or f"cli-{secrets.token_hex(8)}"
            )
        except ValueError as exc:  # a malformed topic or id
            fail(str(exc), code=EXIT_USAGE)
    started = [str(result.run.run_id) for result in outcome.started]
    if as_json:
        print_json({"started": started, "resumed": outcome.resumed, "rejected": outcome.rejected})
    else:
        for run_id in started:
            click.echo(f"started {run_id}")
        for run_id in outcome.resumed:
            click.echo(f"resumed {run_id}")
        for saga, reason in outcome.rejected.items():
            click.echo(f"rejected by {saga}: {reason}", err=True)
        if not (started or outcome.resumed or outcome.rejected):
            click.echo(f"no saga starts on {topic!r} and no run waits for this event")
    if outcome.rejected and not (started or outcome.resumed):
        sys.exit(EXIT_REJECTED)


main.add_command(runs)
main.add_command(keys)
main.add_command(plan)
for command in COMMANDS:
    main.add_command(command)
