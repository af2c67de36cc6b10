"""``relay runs``: list, show, retry and cancel runs in the local store."""

from __future__ import annotations

import click

from tooling.cli._common import RUN_STATUSES, fail, local_engine, print_json, snapshot_view
from tooling.timeline import make_console, run_timeline, runs_table


@click.group()
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
    from functions.http.views import run_list_view

    wanted = [RunStatus(s.upper()) for s in statuses] or None
    with local_engine() as engine:
        runs = engine.runs.list(saga=saga, statuses=wanted, limit=limit)
    headers = [run_list_view(run) for run in runs]
    if as_json:
        print_json({"runs": headers})
        return
    console = make_console()
    if not headers:
        console.print("[dim]no runs[/]")
        return
    # The operator's table shows each run's error too (the API's list entries do not).
    console.print(runs_table([{**h, "error": r.error} for h, r in zip(headers, runs, strict=True)]))


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
            fail(str(exc))
    if as_json:
        print_json(view)
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
    from core.domain.audit import AuditEntry
    from core.errors import ConcurrencyConflict, InvalidRunStateError, RunNotFoundError

    with local_engine() as engine:
        action = engine.runs.retry if operation == "retry" else engine.runs.cancel
        audit = AuditEntry.of(
            action=operation, actor=f"cli:{_user()}", source="cli", at=engine.clock.now()
        )
        try:
            run = action(run_id, audit=audit)
        except (RunNotFoundError, InvalidRunStateError, ConcurrencyConflict) as exc:
            fail(str(exc))
    make_console().print(
        f"run [bold]{run_id}[/] is now [bold]{run.status.value}[/]; "
        "a running `relay dev` on this data dir carries it on",
        highlight=False,
    )


def _user() -> str:
    """Who runs the command, for the audit trail (the login name; ``unknown`` if none)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
