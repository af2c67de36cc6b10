"""How the CLI draws runs: a table of run headers and the timeline of one run's steps.

Everything renders from the public JSON views of ``functions/http/app.py`` (``run_view`` and
``run_header_view``), not from records, so a run read over HTTP (``--url``) and one read
from the local store look the same, and the CLI can never show a field the API hides.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

RUN_STATUS_STYLES: Final[Mapping[str, str]] = {
    "PENDING": "dim",
    "RUNNING": "cyan",
    "WAITING": "blue",
    "COMPLETED": "bold green",
    "COMPENSATING": "yellow",
    "COMPENSATED": "bold yellow",
    "FAILED": "bold red",
    "CANCELLED": "magenta",
}
STEP_STATUS_STYLES: Final[Mapping[str, str]] = {
    "PENDING": "dim",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "COMPENSATING": "yellow",
    "COMPENSATED": "yellow",
    "SKIPPED": "dim",
}
TERMINAL_RUN_STATUSES: Final = frozenset({"COMPLETED", "COMPENSATED", "FAILED", "CANCELLED"})
BAR_WIDTH: Final = 30
SUMMARY_CHARS: Final = 240


def make_console(*, stderr: bool = False) -> Console:
    """A console for one command; wide enough for a timeline when output is not a terminal.

    Built per command (not at import) so it writes to the ``sys.stdout`` of the moment,
    which is what click's test runner captures.
    """
    console = Console(stderr=stderr, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=140, soft_wrap=False)
    return console


def epoch(iso: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 time from a view (``None`` stays ``None``)."""
    if not iso:
        return None
    return datetime.fromisoformat(iso).timestamp()


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``850 ms``, ``2.41 s``, ``3m 05s``."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def format_local_time(iso: str | None) -> str:
    """A view's UTC time in the reader's local time zone, to the second."""
    moment = epoch(iso)
    if moment is None:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(moment))


def styled_status(status: str, *, is_step: bool = False) -> Text:
    """The status word in its colour (green done, yellow undone, red failed...)."""
    styles = STEP_STATUS_STYLES if is_step else RUN_STATUS_STYLES
    return Text(status, style=styles.get(status, ""))


def run_duration(header: Mapping[str, Any], *, now: float | None = None) -> float | None:
    """Wall time of a run: to its last update when it ended, to ``now`` while active."""
    created = epoch(header.get("created_at"))
    if created is None:
        return None
    if header.get("status") in TERMINAL_RUN_STATUSES:
        end = epoch(header.get("updated_at")) or created
    else:
        end = time.time() if now is None else now
    return end - created


def runs_table(headers: Iterable[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """One row per run header: id, saga, coloured status, creation time, duration."""
    table = Table(title=title, header_style="bold", show_lines=False)
    # Rich shrinks wrappable columns first: the run id (cut with an ellipsis) and the
    # error give way on a narrow terminal; status, time and duration never do.
    table.add_column("run id", overflow="ellipsis", min_width=14)
    table.add_column("saga", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("error", overflow="ellipsis")
    for header in headers:
        table.add_row(
            str(header["run_id"]),
            str(header["saga"]),
            styled_status(str(header["status"])),
            format_local_time(header.get("created_at")),
            format_duration(run_duration(header)),
            Text(_clip(header.get("error"), 40), style="red"),
        )
    return table


def summarize_json(value: Any, *, limit: int = SUMMARY_CHARS) -> str:
    """Compact JSON cut to ``limit`` characters, for input and output lines."""
    text = json.dumps(value, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_timeline(view: Mapping[str, Any]) -> RenderableType:
    """The human view of one run: header, step timeline with bars, error, input, output.

    Offsets are from the run's creation. The bars share one axis from the first step's
    start to the run's last change, so time spent queued before the first step (a stack
    that was not running yet) does not squash them. A compensated step's span runs from
    its first attempt to the end of its compensation (its record keeps both ends).
    """
    start = epoch(view.get("created_at")) or 0.0
    steps: Sequence[Mapping[str, Any]] = view.get("steps", [])
    began_at = [t for t in (epoch(s.get("started_at")) for s in steps) if t is not None]
    axis_start = min(began_at, default=start)
    total = _timeline_span(view, axis_start)
    table = Table(header_style="bold", box=None, pad_edge=False, expand=False)
    table.add_column("step", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("start", justify="right", no_wrap=True)
    table.add_column("end", justify="right", no_wrap=True)
    table.add_column("span", justify="right", no_wrap=True)
    table.add_column(
        f"{_offset(axis_start, start)} → {_offset(axis_start + total, start)}", no_wrap=True
    )
    step_errors: list[RenderableType] = []
    for step in steps:
        began = epoch(step.get("started_at"))
        ended = epoch(step.get("finished_at"))
        table.add_row(
            str(step["name"]),
            styled_status(str(step["status"]), is_step=True),
            attempt_counts(step),
            _offset(began, start),
            _offset(ended, start),
            format_duration(ended - began) if began is not None and ended is not None else "-",
            _bar(began, ended, start=axis_start, total=total, status=str(step["status"])),
        )
        # The full (redacted) text when the view carries it: whoever runs the CLI may read
        # the run; ``error`` alone says only the exception's class for most failures.
        error = step.get("error_detail") or step.get("error")
        if error:
            step_errors.append(
                Text.assemble(("  " + str(step["name"]) + ": ", "bold"), (str(error), "red"))
            )
    title = Text.assemble(
        ("run ", "bold"),
        (str(view["run_id"]), "bold"),
        "  ",
        (str(view["saga"]), "cyan"),
        "  ",
        styled_status(str(view["status"])),
    )
    lines: list[RenderableType] = [
        Text(
            f"created {format_local_time(view.get('created_at'))}"
            f" · {'ran' if view.get('status') in TERMINAL_RUN_STATUSES else 'running for'}"
            f" {format_duration(run_duration(view))} (creation to last change)",
            style="dim",
        ),
        table,
        Text(
            "start/end: seconds after creation · span: first attempt to last end, "
            "compensation included · attempts: the step's own + its compensation's",
            style="dim",
        ),
    ]
    if step_errors:
        lines.append(Text("step errors (last error of each step)", style="bold"))
        lines.extend(step_errors)
    run_error = view.get("error_detail") or view.get("error")
    if run_error:
        lines.append(Text.assemble(("run error  ", "bold red"), str(run_error)))
    lines.append(Text.assemble(("input      ", "bold"), summarize_json(view.get("input"))))
    if view.get("output") is not None:
        lines.append(Text.assemble(("output     ", "bold"), summarize_json(view.get("output"))))
    return Panel(Group(*lines), title=title, title_align="left", expand=False)


def attempt_counts(step: Mapping[str, Any]) -> str:
    """``2``, or ``1 + 2 undo`` when the step's compensation was attempted too.

    The step's own attempts and its compensation's are counted apart, so a step that
    failed after one attempt and was undone in two does not read as three tries.
    """
    if "execute_attempts" not in step:  # a view from an older server: the total only
        return str(step.get("attempts", 0))
    own = int(step["execute_attempts"])
    undo = int(step.get("compensation_attempts") or 0)
    return f"{own} + {undo} undo" if undo else str(own)


def _clip(text: str | None, limit: int) -> str:
    """``text`` on one line and at most ``limit`` characters (the full text is in --json)."""
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _timeline_span(view: Mapping[str, Any], start: float) -> float:
    ends = [epoch(view.get("updated_at")) or start]
    for step in view.get("steps", []):
        ends.extend(t for t in (epoch(step.get("finished_at")),) if t is not None)
    if view.get("status") not in TERMINAL_RUN_STATUSES:
        ends.append(time.time())
    return max(max(ends) - start, 1e-3)


def _offset(moment: float | None, start: float) -> str:
    return "-" if moment is None else f"+{moment - start:.3f}s"


def _bar(
    began: float | None, ended: float | None, *, start: float, total: float, status: str
) -> Text:
    """A span of blocks placed on a common scale, so steps line up as a Gantt chart."""
    if began is None:
        return Text(" " * BAR_WIDTH)
    first = min(int((began - start) / total * BAR_WIDTH), BAR_WIDTH - 1)
    end_at = ended if ended is not None else start + total
    last = max(first + 1, min(round((end_at - start) / total * BAR_WIDTH), BAR_WIDTH))
    style = STEP_STATUS_STYLES.get(status, "")
    return Text.assemble(
        ("·" * first, "dim"),
        ("█" * (last - first), style),
        ("·" * (BAR_WIDTH - last), "dim"),
    )
