"""What the ``relay`` commands share: exit codes, the local engine, JSON options, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from tooling.timeline import make_console

if TYPE_CHECKING:
    from core.domain.records import RunSnapshot
    from core.engine.engine import Engine
    from functions.settings import Settings

EXIT_FAILED = 1
"""The operation failed: run not found, not allowed in its state, still running at --timeout."""
EXIT_USAGE = 2
"""The request was wrong: unknown saga, invalid input or JSON, a bad option or setting."""
EXIT_COMPENSATED = 3
"""``relay start --wait``: the run ended COMPENSATED (its steps were undone)."""
EXIT_RUN_FAILED = 4
"""``relay start --wait``: the run ended FAILED (it needs ``relay runs retry``)."""
EXIT_CANCELLED = 5
"""``relay start --wait``: the run ended CANCELLED."""
EXIT_REJECTED = 3
"""``relay publish``: every saga subscribed to the topic rejected the event's data."""
EXIT_CODE_OF_STATUS = {
    "COMPLETED": 0,
    "COMPENSATED": EXIT_COMPENSATED,
    "FAILED": EXIT_RUN_FAILED,
    "CANCELLED": EXIT_CANCELLED,
}
"""How ``relay start --wait`` ends for each terminal run status."""
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


def load_settings() -> Settings:
    from core.errors import ConfigurationError
    from functions.settings import Settings

    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        fail(str(exc), code=EXIT_USAGE)


@contextmanager
def local_engine() -> Iterator[Engine]:
    """An engine on this machine's settings, closed (threads, connections) on exit.

    Each command builds its own instead of sharing ``get_engine()``'s cached one: the
    CLI is short-lived, and tests invoke it many times with different environments.
    """
    from functions.wiring import build_engine

    engine = build_engine(load_settings())
    try:
        yield engine
    finally:
        engine.close()


def snapshot_view(engine: Engine, snapshot: RunSnapshot) -> dict[str, Any]:
    """The ``GET /v1/runs/{id}`` view of ``snapshot``, steps in definition order."""
    from functions.http.views import run_view

    snapshot = engine.runs.resolved(snapshot)  # offloaded input and output, shown for real
    return run_view(snapshot, [step.name for step in engine.ordered_steps(snapshot)])


def fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    from rich.markup import escape

    # Escaped: a message quoting a type (list[str]) or a path must print as it is.
    make_console(stderr=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    sys.exit(code)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def parse_json(text: str, *, option: str = "--input") -> Any:
    """The JSON value of ``option`` (``--input``, ``--data``); ``@path`` reads it from a file."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {text[1:]}: {exc}", param_hint=option) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=option) from None


def exit_with_field_errors(saga: str, errors: list[dict[str, Any]]) -> NoReturn:
    console = make_console(stderr=True)
    console.print(f"[bold red]error:[/] input for saga {saga!r} is invalid:", highlight=False)
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())) or "<input>"
        console.print(f"  [bold]{where}[/]: {error.get('msg', error)}", highlight=False)
    sys.exit(EXIT_USAGE)
