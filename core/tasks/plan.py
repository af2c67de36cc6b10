"""A pipeline's plan: its tasks as nodes with their edges, levels, inputs and hash.

The plan is what an executor needs and nothing it must recompute: for every node its
upstream names, which parameter receives which upstream's output, which parameters the
pipeline's input fills, and the task's run settings (``fail_safe``, ``max_retries``,
``timeout_seconds``, ``stream_output``, ``max_parallel``). Compiling it onto the saga
engine's DAG of steps is a loop over ``order``: each node a step ``after`` its
``upstream``.

The plan's **input** is a pydantic model built from every parameter no upstream feeds
(``input_model``): one field per parameter name, required when some task taking it has
no default, optional (with that default) when all do. Tasks that share a parameter name
share the input field. Extra fields are refused. Fields are validated and documented under
the parameter names (aliases): ``input_model.model_validate(raw).model_dump(by_alias=True)``
gives the keyword arguments by parameter name, defaults filled in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from core.tasks.task import Task, TaskParameter, parameters_model
from core.tasks.types import type_name

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True, slots=True, order=True)
class Edge:
    """``upstream`` must finish before ``downstream``; with a ``parameter``, it feeds it.

    Attributes:
        upstream: The task that runs first.
        downstream: The task that waits for it.
        parameter: The downstream parameter receiving the upstream's output (it is named
            after the upstream); None for a control-only edge (``dependencies=``).
    """

    upstream: str
    downstream: str
    parameter: str | None = None

    @property
    def is_data(self) -> bool:
        """True when the edge carries the upstream's output."""
        return self.parameter is not None


@dataclass(frozen=True, slots=True)
class PipelineInput:
    """One field of the pipeline's input: a parameter that no upstream task feeds.

    Attributes:
        name: The parameter name (and input field).
        annotation: Its type, the same in every task that takes it.
        is_required: Some task taking it has no default.
        default: The tasks' common default when none requires it.
        used_by: Tasks taking it, sorted.
    """

    name: str
    annotation: object
    is_required: bool
    default: object
    used_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlanNode:
    """A task in a plan, with everything an executor needs to schedule it.

    Attributes:
        task: The task (its function and settings).
        level: Its parallel level (0 waits for nothing).
        upstream: Every task it waits for (data and control), sorted.
        downstream: Every task waiting for it, sorted.
        data_inputs: Parameter name → the upstream task whose output it receives.
        control_upstream: Upstreams that pass no data (``dependencies=`` only), sorted.
        pipeline_inputs: Parameters the pipeline's input fills, in signature order.
    """

    task: Task[..., Any]
    level: int
    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    data_inputs: Mapping[str, str]
    control_upstream: tuple[str, ...]
    pipeline_inputs: tuple[str, ...]

    @property
    def name(self) -> str:
        """The task's name."""
        return self.task.name

    @property
    def fail_safe(self) -> bool:
        """The pipeline goes on when this task fails for good."""
        return self.task.fail_safe

    @property
    def max_retries(self) -> int:
        """Retries after the first failed attempt."""
        return self.task.max_retries

    @property
    def timeout_seconds(self) -> float:
        """Longest one attempt may run."""
        return self.task.timeout_seconds

    @property
    def stream_output(self) -> bool:
        """The task yields chunks."""
        return self.task.stream_output

    @property
    def max_parallel(self) -> int | None:
        """Bound on concurrent instances when fanned out (None: unbounded)."""
        return self.task.max_parallel


@dataclass(frozen=True, eq=False)
class PipelinePlan:
    """The validated plan of a pipeline (build it with ``Pipeline.plan()``).

    Attributes:
        name: The pipeline's name.
        hash: 16 hex digits of the structure (``structure_hash``): the same tasks,
            settings, types and edges give the same hash in any declaration order.
        order: A deterministic topological order (the levels, one after the other).
        levels: Tasks that may run at once, level by level, names sorted.
        nodes: Every node by task name, in ``order``.
        edges: Every edge, sorted.
        inputs: The pipeline input's fields, sorted by name.
        description: One line shown by ``relay plan``.
    """

    name: str
    hash: str
    order: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    nodes: Mapping[str, PlanNode]
    edges: tuple[Edge, ...]
    inputs: tuple[PipelineInput, ...]
    description: str = field(default="")

    @cached_property
    def input_model(self) -> type[BaseModel]:
        """The pydantic model of the pipeline's input (see the module docstring)."""
        parameters = [
            TaskParameter(i.name, i.annotation, has_default=not i.is_required, default=i.default)
            for i in self.inputs
        ]
        return parameters_model(f"{self.name}_input", parameters)

    def input_schema(self) -> dict[str, Any]:
        """JSON schema of the pipeline's input."""
        return self.input_model.model_json_schema()

    def to_json(self, *, include_schemas: bool = True) -> dict[str, Any]:
        """The plan as JSON (what ``relay plan --json`` prints).

        Args:
            include_schemas: Add each task's input and output JSON schemas and the
                pipeline input's (builds pydantic adapters: slower on huge plans).
        """
        tasks: list[dict[str, Any]] = []
        for node in self.nodes.values():
            task = node.task
            entry: dict[str, Any] = {
                "name": node.name,
                "level": node.level,
                "upstream": list(node.upstream),
                "inputs": dict(node.data_inputs),
                "dependencies": list(node.control_upstream),
                "pipeline_inputs": list(node.pipeline_inputs),
                "tags": list(task.tags),
                "fail_safe": task.fail_safe,
                "max_retries": task.max_retries,
                "timeout_seconds": task.timeout_seconds,
                "stream_output": task.stream_output,
                "max_parallel": task.max_parallel,
                "is_async": task.is_async,
                "parameters": {p.name: type_name(p.annotation) for p in task.parameters},
                "output_type": type_name(task.output_type),
            }
            if include_schemas:
                entry["input_schema"] = task.input_schema()
                entry["output_schema"] = task.output_schema()
            tasks.append(entry)
        document: dict[str, Any] = {
            "name": self.name,
            "hash": self.hash,
            "description": self.description,
            "order": list(self.order),
            "levels": [list(level) for level in self.levels],
            "edges": [
                {
                    "from": e.upstream,
                    "to": e.downstream,
                    "parameter": e.parameter,
                    "kind": "data" if e.is_data else "control",
                }
                for e in self.edges
            ],
            "inputs": {
                i.name: {
                    "type": type_name(i.annotation),
                    "required": i.is_required,
                    "used_by": list(i.used_by),
                }
                for i in self.inputs
            },
            "tasks": tasks,
        }
        if include_schemas:
            document["input_schema"] = self.input_schema()
        return document

    def mermaid(self) -> str:
        """A Mermaid flowchart: data edges labelled with their type, control edges dotted."""
        ids = {name: f"t{index}" for index, name in enumerate(self.order)}
        lines = ["flowchart TD"]
        for name, node in self.nodes.items():
            marks = [
                m for m, on in (("stream", node.stream_output), ("fail_safe", node.fail_safe)) if on
            ]
            label = f"{name} ({', '.join(marks)})" if marks else name
            lines.append(f'    {ids[name]}["{label}"]')
        for edge in self.edges:
            source, target = ids[edge.upstream], ids[edge.downstream]
            if edge.is_data:
                carried = type_name(self.nodes[edge.upstream].task.output_type, qualified=False)
                lines.append(f'    {source} -->|"{_mermaid_text(carried)}"| {target}')
            else:
                lines.append(f"    {source} -.-> {target}")
        return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def structure_hash(tasks: Mapping[str, Task[..., Any]], edges: tuple[Edge, ...]) -> str:
    """16 hex digits naming a pipeline's structure, whatever the declaration order.

    Covers every task's name, tags, settings, parameter names, types and defaults, its
    output type, and every edge; not the pipeline's name (the same structure is the same
    DAG) and not the functions' code.
    """
    import hashlib

    upstream: dict[str, list[tuple[str, str]]] = {name: [] for name in tasks}
    for edge in edges:
        upstream[edge.downstream].append((edge.upstream, edge.parameter or ""))
    canonical = []
    for name in sorted(tasks):
        task = tasks[name]
        canonical.append(
            [
                name,
                sorted(task.tags),
                [task.fail_safe, task.max_retries, task.timeout_seconds],
                [task.stream_output, task.max_parallel, task.is_async],
                [
                    [p.name, type_name(p.annotation), p.has_default, _stable(p.default)]
                    for p in task.parameters
                ],
                type_name(task.output_type),
                sorted(upstream[name]),
            ]
        )
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stable(value: object) -> object:
    """A default as JSON when it is JSON, else its type's name (never a memory address)."""
    if value is None or isinstance(value, str | int | float):
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return f"<{type_name(type(value))}>"
    return value
