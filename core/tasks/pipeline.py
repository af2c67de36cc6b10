"""``Pipeline``: tasks chosen by name or tag, planned and type-checked before any run.

::

    registry = TaskRegistry([extract, transform, load])
    etl = Pipeline("etl", tags=["etl.**"], registry=registry)
    plan = etl.plan()   # DefinitionError here, not in a run, when something is wrong

Which tasks a pipeline holds: the tasks it names (``Task`` objects, or names looked up
in ``registry``), the tasks whose tags match its tag patterns, and then, transitively,
every task those depend on: a ``dependencies=`` name, or a parameter named after a task
(Hamilton's rule: asking for ``load`` brings in ``transform`` and ``extract``). Upstreams
are looked up among the given ``Task`` objects first, then in the registry.

Planning checks, in this order, and raises a ``DefinitionError`` subclass naming the fix:
every dependency exists (``UnknownTaskError``); no cycle (``DependencyCycleError``, with
a real cycle); every data edge type-checks (``SchemaMismatchError``, rules in
``core/tasks/types.py``), and a parameter fed by a ``fail_safe`` task accepts ``None``
(what it receives when that task fails); parameters that become pipeline inputs agree on type and
default across tasks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from core.domain.steps import check_name
from core.errors import DefinitionError, DependencyCycleError, SchemaMismatchError, UnknownTaskError
from core.tasks.graph import CycleFound, parallel_levels
from core.tasks.plan import Edge, PipelineInput, PipelinePlan, PlanNode, structure_hash
from core.tasks.registry import TaskRegistry
from core.tasks.task import Task
from core.tasks.types import is_assignable, type_name


class Pipeline:
    """A named set of tasks, planned on first use.

    Args:
        name: Stable name (``relay plan NAME``), letters, digits, ``_`` and ``-``.
        tasks: Tasks to include, as ``Task`` objects or names in ``registry``.
        tags: Tag patterns (``etl``, ``etl.*``, ``etl.**``) selecting tasks in ``registry``.
        registry: Where names, tags and upstreams are looked up.
        description: One line shown by ``relay plan``.

    Raises:
        DefinitionError: a bad name, nothing selected, or names/tags without a registry.
    """

    def __init__(
        self,
        name: str,
        *,
        tasks: Iterable[Task[..., Any] | str] = (),
        tags: Iterable[str] = (),
        registry: TaskRegistry | None = None,
        description: str = "",
    ) -> None:
        check_name("pipeline", name)
        self.name = name
        self.tasks = tuple(tasks)
        self.tags = (tags,) if isinstance(tags, str) else tuple(tags)
        self.registry = registry
        self.description = description
        if not self.tasks and not self.tags:
            raise DefinitionError(f"pipeline {name!r} selects no task; pass tasks= or tags=")
        by_name = [t for t in self.tasks if isinstance(t, str)]
        if (by_name or self.tags) and registry is None:
            raise DefinitionError(
                f"pipeline {name!r} selects tasks by name or tag ({[*by_name, *self.tags]}) "
                "but has no registry= to look them up in"
            )
        self._plan: PipelinePlan | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Pipeline(name={self.name!r}, tasks={self.tasks!r}, tags={self.tags!r})"

    def plan(self) -> PipelinePlan:
        """The pipeline's validated plan, computed once.

        Raises:
            DefinitionError: see the module docstring for what is checked.
        """
        with self._lock:
            if self._plan is None:
                self._plan = plan_pipeline(
                    self.name, self._select(), self.registry, description=self.description
                )
            return self._plan

    def _select(self) -> list[Task[..., Any]]:
        chosen: list[Task[..., Any]] = []
        for item in self.tasks:
            if isinstance(item, Task):
                chosen.append(item)
            elif isinstance(item, str):
                assert self.registry is not None  # checked in __init__
                if item not in self.registry:
                    raise UnknownTaskError(
                        task=item, known=self.registry.names(), wanted_by=f"pipeline {self.name!r}"
                    )
                chosen.append(self.registry.get(item))
            else:
                raise DefinitionError(
                    f"pipeline {self.name!r}: tasks= takes tasks or task names, got "
                    f"{type(item).__name__}"
                )
        for pattern in self.tags:
            assert self.registry is not None
            found = self.registry.find(pattern)
            if not found:
                raise DefinitionError(
                    f"pipeline {self.name!r}: tag pattern {pattern!r} matches no registered "
                    f"task; tags in the registry: {', '.join(self.registry.tags()) or 'none'}"
                )
            chosen.extend(found)
        return chosen


def plan_pipeline(
    name: str,
    chosen: Iterable[Task[..., Any]],
    registry: TaskRegistry | None = None,
    *,
    description: str = "",
) -> PipelinePlan:
    """Plan the tasks ``chosen`` plus their upstreams (see the module docstring).

    Args:
        name: The pipeline's name (in messages and the plan).
        chosen: The selected tasks.
        registry: Where upstreams not among ``chosen`` are looked up.
        description: Carried into the plan.

    Returns:
        The validated plan.

    Raises:
        DefinitionError: an unknown dependency, a cycle, a type mismatch on a data edge,
            two different tasks under one name, or inconsistent pipeline inputs.
    """
    tasks = _closure(name, chosen, registry)
    edges = _edges(tasks)
    upstream: dict[str, set[str]] = {task_name: set() for task_name in tasks}
    for edge in edges:
        upstream[edge.downstream].add(edge.upstream)
    try:
        levels = parallel_levels(upstream)
    except CycleFound as found:
        raise DependencyCycleError(pipeline=name, cycle=found.cycle) from None
    _check_types(name, tasks, edges)
    level_of = {task_name: index for index, level in enumerate(levels) for task_name in level}
    order = [task_name for level in levels for task_name in level]
    nodes = _nodes(tasks, edges, order, level_of)
    return PipelinePlan(
        name=name,
        hash=structure_hash(tasks, edges),
        order=tuple(order),
        levels=tuple(tuple(level) for level in levels),
        nodes=nodes,
        edges=edges,
        inputs=_inputs(name, tasks, nodes),
        description=description,
    )


def _closure(
    pipeline: str, chosen: Iterable[Task[..., Any]], registry: TaskRegistry | None
) -> dict[str, Task[..., Any]]:
    """The chosen tasks and every task they depend on, transitively, by name."""
    given: dict[str, Task[..., Any]] = {}
    for task in chosen:
        _add(pipeline, given, task)

    def lookup(task_name: str) -> Task[..., Any] | None:
        found = given.get(task_name)
        if found is None and registry is not None and task_name in registry:
            found = registry.get(task_name)
        return found

    tasks: dict[str, Task[..., Any]] = {}
    pending = list(given.values())
    while pending:
        task = pending.pop()
        if task.name in tasks:
            continue
        _add(pipeline, tasks, task)
        for dep in task.dependencies:
            upstream = lookup(dep)
            if upstream is None:
                known = sorted({*given, *(registry.names() if registry else ())})
                raise UnknownTaskError(
                    task=dep, known=known, wanted_by=f"dependencies= of task {task.name!r}"
                )
            pending.append(upstream)
        for parameter in task.parameters:
            upstream = lookup(parameter.name)
            if upstream is not None:
                pending.append(upstream)
    return tasks


def _add(pipeline: str, tasks: dict[str, Task[..., Any]], task: Task[..., Any]) -> None:
    existing = tasks.get(task.name)
    if existing is not None and existing is not task:
        raise DefinitionError(
            f"pipeline {pipeline!r} holds two different tasks named {task.name!r}; rename one "
            "with @task(name=...)"
        )
    tasks[task.name] = task


def _edges(tasks: dict[str, Task[..., Any]]) -> tuple[Edge, ...]:
    edges: set[Edge] = set()
    for task in tasks.values():
        fed = {p.name for p in task.parameters if p.name in tasks}
        edges.update(Edge(upstream, task.name, upstream) for upstream in fed)
        edges.update(Edge(dep, task.name) for dep in task.dependencies if dep not in fed)
    return tuple(sorted(edges, key=lambda e: (e.upstream, e.downstream, e.parameter or "")))


def _check_types(pipeline: str, tasks: dict[str, Task[..., Any]], edges: tuple[Edge, ...]) -> None:
    for edge in edges:
        if edge.parameter is None:
            continue
        source = tasks[edge.upstream].output_type
        parameter = tasks[edge.downstream].parameter(edge.parameter)
        assert parameter is not None  # data edges are built from parameters
        if not is_assignable(source, parameter.annotation):
            raise SchemaMismatchError(
                pipeline=pipeline,
                upstream=edge.upstream,
                downstream=edge.downstream,
                parameter=edge.parameter,
                upstream_type=type_name(source),
                parameter_type=type_name(parameter.annotation),
            )
        if tasks[edge.upstream].fail_safe and not is_assignable(None, parameter.annotation):
            raise DefinitionError(
                f"pipeline {pipeline!r}: task {edge.upstream!r} is fail_safe, so parameter "
                f"{edge.parameter!r} of task {edge.downstream!r} receives None when it fails; "
                f"annotate it {type_name(parameter.annotation)} | None (Optional), or make "
                f"{edge.downstream!r} wait for it with dependencies= instead"
            )


def _nodes(
    tasks: dict[str, Task[..., Any]],
    edges: tuple[Edge, ...],
    order: list[str],
    level_of: dict[str, int],
) -> dict[str, PlanNode]:
    ups: dict[str, set[str]] = {n: set() for n in tasks}
    downs: dict[str, set[str]] = {n: set() for n in tasks}
    data: dict[str, dict[str, str]] = {n: {} for n in tasks}
    for edge in edges:
        ups[edge.downstream].add(edge.upstream)
        downs[edge.upstream].add(edge.downstream)
        if edge.parameter is not None:
            data[edge.downstream][edge.parameter] = edge.upstream
    nodes: dict[str, PlanNode] = {}
    for task_name in order:
        task = tasks[task_name]
        fed = data[task_name]
        nodes[task_name] = PlanNode(
            task=task,
            level=level_of[task_name],
            upstream=tuple(sorted(ups[task_name])),
            downstream=tuple(sorted(downs[task_name])),
            data_inputs={p.name: fed[p.name] for p in task.parameters if p.name in fed},
            control_upstream=tuple(sorted(ups[task_name] - set(fed.values()))),
            pipeline_inputs=tuple(p.name for p in task.parameters if p.name not in fed),
        )
    return nodes


def _inputs(
    pipeline: str, tasks: dict[str, Task[..., Any]], nodes: dict[str, PlanNode]
) -> tuple[PipelineInput, ...]:
    """The pipeline input's fields: parameters no upstream feeds, merged across tasks."""
    takers: dict[str, list[str]] = {}
    for node in nodes.values():
        for parameter in node.pipeline_inputs:
            takers.setdefault(parameter, []).append(node.name)
    inputs: list[PipelineInput] = []
    for field_name in sorted(takers):
        users = sorted(takers[field_name])
        found = [(u, tasks[u].parameter(field_name)) for u in users]
        params = [(u, p) for u, p in found if p is not None]
        first_user, first = params[0]
        for user, other in params[1:]:
            if other.annotation != first.annotation:
                raise DefinitionError(
                    f"pipeline {pipeline!r}: tasks {first_user!r} and {user!r} both take input "
                    f"{field_name!r}, as {type_name(first.annotation)} and "
                    f"{type_name(other.annotation)}; give them one type or different names"
                )
        required = any(not p.has_default for _, p in params)
        defaults = [p.default for _, p in params if p.has_default]
        if not required and any(not _same(d, defaults[0]) for d in defaults[1:]):
            raise DefinitionError(
                f"pipeline {pipeline!r}: tasks {', '.join(users)} take input {field_name!r} "
                f"with different defaults ({', '.join(repr(d) for d in defaults)}); give them "
                "one default or different names"
            )
        inputs.append(
            PipelineInput(
                name=field_name,
                annotation=first.annotation,
                is_required=required,
                default=None if required else defaults[0],
                used_by=tuple(users),
            )
        )
    return tuple(inputs)


def _same(left: object, right: object) -> bool:
    try:
        return bool(left == right)
    except Exception:  # an __eq__ that raises or returns an array: compare identity
        return left is right
