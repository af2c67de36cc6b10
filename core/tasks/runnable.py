"""Running a pipeline: its plan compiled onto the saga engine, one step per task.

A pipeline runs on the same durable step protocol as a saga, on every backend, because
it *is* a saga to the engine: :func:`compile_pipeline` turns its plan into a
:class:`PipelineSaga` whose steps are the tasks, in the plan's topological order:

* each task is one step that runs ``after`` all its upstreams, data and control, so a
  task with several upstreams runs once, when the last of them commits (the engine's
  readiness rule, fenced by version checks);
* a task has no compensation; its ``max_retries`` and ``timeout`` are the step's retry
  policy (``max_retries + 1`` attempts) and timeout, and every attempt is one step
  attempt, recorded on the step's own record;
* the step function calls the task with its parameters filled by name: a parameter
  named after an upstream task receives that task's output, the others come from the
  pipeline's input, validated at the door by the plan's input model (so ``POST
  /v1/sagas/{name}/runs`` answers 422 naming the field). Arguments are validated into
  the parameters' types (a ``list[Sale]`` parameter receives ``Sale`` objects) and the
  output is stored as JSON through the task's output type. Async tasks are awaited as
  async saga steps are;
* ``fail_safe``: a fail-safe task that fails for good stays FAILED, nothing is
  compensated, and the run goes on: its data downstreams receive ``None`` (the planner
  requires such a parameter to accept ``None``), its control downstreams just run. The
  run then COMPLETES;
* a task that is not fail-safe and fails for good stops the run the way a saga step
  does: tasks not started are SKIPPED and, as no task has anything to undo, the run ends
  COMPENSATED with the task's error (``relay runs retry`` does not apply: start a new run).

The definition hash covers the plan's structure hash and the code of every task, so a
redeploy that changes a task is versioned as a saga's is.

Streaming tasks (``stream_output=True``) run their generator inside their step: each
yielded chunk is serialized through the task's item type and committed through the I/O
manager as it is produced (``{run}/{task}/chunk-NNNNNNNNNN``), in order; the step's
record keeps only the count (``{"$chunks": N}``) and a downstream parameter named after
the task receives the N chunks, loaded in order. A redelivered attempt (the worker died
mid-stream) resumes after the last committed chunk: it passes that index as
``resume_from`` when the task declares it, and otherwise replays the generator and drops
the chunks already committed (the resume contract is in ``core/tasks/task.py``). A
streaming pipeline needs an I/O manager. Per-item fan-out is not run yet.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from core.domain.context import StepContext
from core.domain.definition_hash import definition_hash
from core.domain.json_types import JSONValue
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from core.errors import InputValidationError, NonRetryableStepError
from core.tasks.plan import PipelinePlan, PlanNode
from core.tasks.streaming import stream_step_function
from core.tasks.task import Task

if TYPE_CHECKING:
    from pydantic import BaseModel, TypeAdapter

    from core.tasks.pipeline import Pipeline

StepFn = Callable[[StepContext[Any]], Any]


class PipelineSaga(Saga[JSONValue]):
    """A pipeline as the engine runs it: a saga with one step per task (see the module).

    Attributes:
        plan: The pipeline's validated plan.

    """

    def __init__(self, plan: PipelinePlan) -> None:
        super().__init__(plan.name, description=plan.description)
        self.plan = plan
        # Documents the input (OpenAPI, the manifest); validation is ``validate_input``'s.
        self.input_model = plan.input_model
        for name in plan.order:
            node = plan.nodes[name]
            task = node.task
            self._add_step(
                name,
                _step_function(node),
                after=node.upstream,
                parallel=False,
                retry=RetryPolicy(max_attempts=task.max_retries + 1),
                timeout_seconds=task.timeout_seconds,
                compensate_on_failure=False,
                fail_safe=task.fail_safe,
            )
        self.freeze()

    @property
    def streaming_steps(self) -> frozenset[str]:
        """The steps of ``stream_output`` tasks: their chunks expire with the run."""
        return frozenset(name for name in self.plan.order if self.plan.nodes[name].stream_output)

    def __repr__(self) -> str:
        return f"PipelineSaga(name={self.name!r}, tasks={list(self.plan.order)})"

    @cached_property
    def definition_hash(self) -> str:
        """16 hex digits: the plan's structure hash plus the code of every task."""
        steps = [
            dataclasses.replace(step, fn=self.plan.nodes[name].task.fn)
            for name, step in self.steps.items()
        ]
        code = definition_hash(self.name, steps)
        return hashlib.sha256(f"{self.plan.hash}:{code}".encode()).hexdigest()[:16]

    def validate_input(self, raw: object) -> Any:
        """Check ``raw`` against the plan's input model; its JSON by parameter name.

        Raises:
            InputValidationError: one entry per bad field, located by parameter name.
        """
        try:
            model = self.plan.input_model.model_validate({} if raw is None else raw)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise InputValidationError(saga=self.name, errors=errors) from None
        return model.model_dump(mode="json", by_alias=True)

    def parse_input(self, stored: JSONValue) -> JSONValue:
        """The stored input as tasks take it: JSON by parameter name (see ``_arguments``)."""
        return stored


def compile_pipeline(pipeline: Pipeline | PipelinePlan) -> PipelineSaga:
    """The saga that runs ``pipeline`` (planning it first when given a ``Pipeline``).

    Raises:
        DefinitionError: the plan is invalid (see ``Pipeline.plan``).
    """
    plan = pipeline if isinstance(pipeline, PipelinePlan) else pipeline.plan()
    return PipelineSaga(plan)


def _step_function(node: PlanNode) -> StepFn:
    """The step function of ``node``: sync for a sync task, a coroutine for an async one."""
    if node.task.stream_output:
        return stream_step_function(node, _arguments)
    if node.task.is_async:

        async def run_async_task(ctx: StepContext[Any]) -> Any:
            result = await node.task.fn(**_arguments(node, ctx))
            return _dump(node, result)

        return run_async_task

    def run_task(ctx: StepContext[Any]) -> Any:
        return _dump(node, node.task.fn(**_arguments(node, ctx)))

    return run_task


def _arguments(node: PlanNode, ctx: StepContext[Any]) -> dict[str, Any]:
    """The task's keyword arguments: upstream outputs and pipeline inputs, validated.

    Raises:
        NonRetryableStepError: an argument does not validate into its parameter's type
            (the same outputs would fail again, so the task fails without retrying).
    """
    task = node.task
    stored: Mapping[str, Any] = ctx.input if isinstance(ctx.input, Mapping) else {}
    raw: dict[str, Any] = {}
    for parameter in task.parameters:
        upstream = node.data_inputs.get(parameter.name)
        if upstream is not None:
            # A fail-safe upstream that failed has no output: the parameter gets None.
            raw[parameter.name] = ctx.outputs.get(upstream)
        elif parameter.name in stored:
            raw[parameter.name] = stored[parameter.name]
    model: BaseModel
    try:
        model = task.input_model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise NonRetryableStepError(
            f"task {task.name!r} cannot take its inputs: {exc.error_count()} error(s), first "
            f"at {where}: {first['msg']}"
        ) from None
    return {p.name: getattr(model, f"p{index}") for index, p in enumerate(task.parameters)}


def _dump(node: PlanNode, result: object) -> Any:
    """The task's result as JSON, serialized through its declared output type."""
    try:
        return _output_adapter(node.task).dump_python(result, mode="json", warnings=False)
    except Exception as exc:  # pydantic's serialization errors, or the value's own
        raise NonRetryableStepError(
            f"task {node.name!r} returned a value its output type cannot serialize as JSON "
            f"({type(exc).__name__}: {exc})"
        ) from exc


@functools.cache
def _output_adapter(task: Task[..., Any]) -> TypeAdapter[Any]:
    """The task's output adapter, built once per task (it compiles a serializer, ~1 ms)."""
    from pydantic import TypeAdapter

    return TypeAdapter(task.output_type)  # type: ignore[arg-type]  # an annotation
