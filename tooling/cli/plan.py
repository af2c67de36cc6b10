"""``relay plan``: a pipeline's validated plan, as a table and a Mermaid diagram, or JSON.

Planning runs every definition-time check (unknown dependencies, cycles, types on the
data edges), so ``relay plan NAME`` is also the way to validate a pipeline in CI. Exit
codes: 0 the plan is valid; 1 it is not (the error names the tasks and the fix); 2 no
such pipeline, or its module does not import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tooling.cli._common import EXIT_FAILED, EXIT_USAGE, fail, print_json
from tooling.timeline import make_console

if TYPE_CHECKING:
    from rich.table import Table

    from core.tasks.pipeline import Pipeline
    from core.tasks.plan import PipelinePlan


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON, with schemas.")
def plan(name: str, as_json: bool) -> None:
    """Print the plan of pipeline NAME: order, parallel levels, edges and types.

    NAME is a pipeline of the bundle (functions/bundle.py) or a reference to one
    elsewhere: package.module:attribute or path/to/file.py:attribute.
    """
    from core.errors import ConfigurationError, DefinitionError, UnknownPipelineError

    try:
        pipeline = _find(name)
    except (UnknownPipelineError, ConfigurationError) as exc:
        fail(str(exc), code=EXIT_USAGE)
    try:
        built = pipeline.plan()
        document = built.to_json() if as_json else None
    except DefinitionError as exc:
        fail(str(exc), code=EXIT_FAILED)
    if document is not None:
        print_json(document)
        return
    console = make_console()
    console.print(_table(built))
    console.print(_inputs_line(built), highlight=False, markup=False)
    click.echo("\n```mermaid")
    click.echo(built.mermaid())
    click.echo("```")


def _find(name: str) -> Pipeline:
    from core.registry import PipelineRegistry, import_pipeline
    from functions.bundle import PIPELINE_MODULES

    if ":" in name:
        return import_pipeline(name)
    return PipelineRegistry(PIPELINE_MODULES).get(name)


def _table(built: PipelinePlan) -> Table:
    from rich.table import Table
    from rich.text import Text

    from core.tasks.types import type_name

    title = f"pipeline {built.name}  hash {built.hash}"
    if built.description:
        title += f"\n{built.description}"
    table = Table(title=title, title_justify="left")
    for column in ("level", "task", "waits for", "receives", "from input", "returns", "settings"):
        table.add_column(column)
    for node in built.nodes.values():
        task = node.task
        settings = [f"retries={task.max_retries}", f"timeout={task.timeout_seconds:g}s"]
        settings += [flag for flag, on in (("fail_safe", task.fail_safe),) if on]
        settings += ["stream"] if task.stream_output else []
        settings += [f"max_parallel={task.max_parallel}"] if task.max_parallel else []
        waits = [*node.data_inputs.values(), *(f"{c} (control)" for c in node.control_upstream)]
        receives = [
            f"{param}: {type_name(p.annotation, qualified=False)}"
            for param in node.data_inputs
            if (p := task.parameter(param)) is not None
        ]
        table.add_row(
            str(node.level),
            Text(node.name, style="bold"),
            Text(", ".join(waits) or "-"),
            Text("\n".join(receives) or "-"),
            Text(", ".join(node.pipeline_inputs) or "-"),
            Text(type_name(task.output_type, qualified=False)),
            Text(" ".join(settings)),
        )
    return table


def _inputs_line(built: PipelinePlan) -> str:
    from core.tasks.types import type_name

    if not built.inputs:
        return "input: none"
    fields = [
        f"{i.name}: {type_name(i.annotation, qualified=False)}"
        + ("" if i.is_required else f" = {i.default!r}")
        for i in built.inputs
    ]
    return "input: " + ", ".join(fields)
