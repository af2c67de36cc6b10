"""``@task``: a plain function declared as a pipeline node, with schemas from its type hints.

A task's parameters say where its inputs come from (Hamilton's and dp-poc's style)::

    @task(tags=["etl.extract"])
    def extract(row_count: int = 100) -> list[Sale]: ...

    @task(tags=["etl.transform"], max_retries=3)
    def transform(extract: list[Sale], currency: str) -> list[CleanSale]: ...

``transform``'s parameter ``extract`` receives ``extract``'s output; ``currency``, named
after no task, comes from the pipeline's input (``core/tasks/plan.py``). ``dependencies=``
adds edges that carry no data (run after, receive nothing). Parameters are passed by
name, so ``*args``, ``**kwargs`` and positional-only parameters are refused.

A ``Task`` is an immutable value that holds no registry: the same task may sit in
several pipelines and registries. Calling it calls the function, so it stays unit-testable.

Streaming: with ``stream_output=True`` the function is a generator (sync or async) and
each yielded value is one chunk; a downstream parameter named after it receives the
chunks collected in order, so its output type is ``list[<yielded type>]``.

The engine commits each chunk through the I/O manager as it is yielded, and an attempt
redelivered after a crash resumes after the last committed chunk. The **resume
contract** a streaming task honours:

* the chunk at index ``i`` is the same on every attempt for the same inputs
  (deterministic per index: no clock, no randomness, no source that moves under it);
* to skip the work already done, declare ``resume_from: int = 0``: the engine passes
  the index of the chunk to produce next, and the generator's first yield must be that
  chunk. ``resume_from`` is not a pipeline input (``Task.cursor_parameter``);
* without ``resume_from`` the generator restarts at chunk 0 and the engine drops the
  chunks already committed, unsaved: correct, but the work is done again.

A chunk stored twice (a retried save, two workers racing on a redelivery) replaces
itself, so nothing is doubled; a downstream task receives exactly ``count`` chunks.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, ParamSpec, TypeVar, overload

from core.domain.steps import MAX_TIMEOUT_SECONDS, check_name
from core.errors import DefinitionError

if typing.TYPE_CHECKING:
    from pydantic import BaseModel

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt (three attempts in all, as a saga step's default)."""
DEFAULT_TIMEOUT_SECONDS = 30.0
"""Longest one attempt may run, as a saga step's default."""
CURSOR_PARAMETER = "resume_from"
"""The parameter through which a streaming task learns which chunk to produce next."""
_TAG = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_STREAM_ORIGINS = frozenset(
    {
        collections.abc.Iterator,
        collections.abc.Iterable,
        collections.abc.Generator,
        collections.abc.AsyncIterator,
        collections.abc.AsyncIterable,
        collections.abc.AsyncGenerator,
    }
)


@dataclass(frozen=True, slots=True)
class TaskParameter:
    """One parameter of a task: its name, its annotation and whether it is optional."""

    name: str
    annotation: object
    has_default: bool
    default: object = None


@dataclass(frozen=True, eq=False)
class Task(Generic[P, R]):
    """A function declared as a pipeline node (build one with :func:`task`).

    Attributes:
        name: Unique within a registry or pipeline; downstream parameters use it.
        fn: The user's function (sync, async, or a generator when streaming).
        tags: Dot-separated labels a pipeline selects tasks by (``etl.extract``).
        dependencies: Tasks that must finish first without passing data.
        max_retries: Retries after the first failed attempt.
        timeout_seconds: Longest one attempt may run.
        fail_safe: The pipeline goes on when this task fails for good.
        stream_output: The function yields chunks instead of returning a value.
        max_parallel: Bound on concurrent instances when the task is fanned out.
        parameters: The function's parameters, in order.
        output_type: What a downstream parameter named after this task receives.
        item_type: What each chunk is, for a streaming task (else None).
        is_async: The function is a coroutine or async generator function.
        description: The first line of the function's docstring.
        cursor_parameter: ``resume_from`` when a streaming task takes the index of the
            chunk to produce next (not in ``parameters``; see the module), else None.
    """

    name: str
    fn: Callable[P, R] = field(repr=False)
    tags: tuple[str, ...]
    dependencies: tuple[str, ...]
    max_retries: int
    timeout_seconds: float
    fail_safe: bool
    stream_output: bool
    max_parallel: int | None
    parameters: tuple[TaskParameter, ...] = field(repr=False)
    output_type: object = field(repr=False)
    item_type: object = field(repr=False)
    is_async: bool = field(repr=False)
    description: str = field(repr=False)
    cursor_parameter: str | None = field(default=None, repr=False)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function (a task stays a plain function in unit tests)."""
        return self.fn(*args, **kwargs)

    def parameter(self, name: str) -> TaskParameter | None:
        """The parameter called ``name``, if the function has one."""
        return next((p for p in self.parameters if p.name == name), None)

    @cached_property
    def input_model(self) -> type[BaseModel]:
        """A pydantic model of the task's keyword arguments (built on first use)."""
        return parameters_model(f"{self.name}_input", self.parameters)

    def input_schema(self) -> dict[str, Any]:
        """JSON schema of the task's parameters (an object, one property per parameter)."""
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        """JSON schema of what downstream parameters named after this task receive."""
        from pydantic import TypeAdapter

        adapter: TypeAdapter[object] = TypeAdapter(self.output_type)  # type: ignore[arg-type]
        return adapter.json_schema()


def parameters_model(model_name: str, parameters: Iterable[TaskParameter]) -> type[BaseModel]:
    """A pydantic model with one field per parameter, named by alias.

    Fields are named ``p0, p1, ...`` with the parameter's name as alias, so any
    parameter name (``model_config``, ``_x``) is a valid field; validation and JSON
    schema use the aliases, so callers see only the real names. A parameter with a
    default is optional; extra fields are refused.
    """
    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {}
    for index, parameter in enumerate(parameters):
        default = parameter.default if parameter.has_default else ...
        fields[f"p{index}"] = (parameter.annotation, Field(default, alias=parameter.name))
    try:
        return create_model(
            model_name,
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
    except Exception as exc:  # pydantic refuses the annotation: say which model
        raise DefinitionError(
            f"cannot build a schema for {model_name}: {type(exc).__name__}: {exc}; use types "
            "pydantic can validate (JSON types, pydantic models, dataclasses)"
        ) from exc


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    tags: Iterable[str] = (),
    dependencies: Iterable[str] = (),
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    fail_safe: bool = False,
    stream_output: bool = False,
    max_parallel: int | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    tags: Iterable[str] = (),
    dependencies: Iterable[str] = (),
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    fail_safe: bool = False,
    stream_output: bool = False,
    max_parallel: int | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a task (decorator, with or without arguments).

    Args:
        fn: The function, when used as a bare decorator.
        name: Task name; defaults to the function's name.
        tags: Dot-separated labels (``etl``, ``etl.extract``) pipelines select by.
        dependencies: Tasks that must finish first and pass no data.
        max_retries: Retries after a failed attempt (0: a single attempt).
        timeout: Longest one attempt may run, in seconds (at most 1800).
        fail_safe: When the task fails for good, the pipeline goes on without it.
        stream_output: The function is a generator; each yielded value is a chunk.
        max_parallel: At most this many instances run at once when fanned out.

    Returns:
        The :class:`Task` (or a decorator making one).

    Raises:
        DefinitionError: a bad name, tag, setting or signature, or hints that do not
            resolve; the message names the task and the fix.
    """

    def declare(func: Callable[P, R]) -> Task[P, R]:
        return build_task(
            func,
            name=name,
            tags=tags,
            dependencies=dependencies,
            max_retries=max_retries,
            timeout_seconds=timeout,
            fail_safe=fail_safe,
            stream_output=stream_output,
            max_parallel=max_parallel,
        )

    return declare(fn) if fn is not None else declare


def build_task(
    func: Callable[P, R],
    *,
    name: str | None,
    tags: Iterable[str],
    dependencies: Iterable[str],
    max_retries: int,
    timeout_seconds: float,
    fail_safe: bool,
    stream_output: bool,
    max_parallel: int | None,
) -> Task[P, R]:
    """The :class:`Task` for ``func`` (what ``@task`` does; see it for the arguments)."""
    task_name = name or str(getattr(func, "__name__", ""))
    check_name("task", task_name)
    tag_tuple = tuple(dict.fromkeys(check_tag(task_name, t) for t in _strings(tags, "tags")))
    deps = tuple(dict.fromkeys(_strings(dependencies, "dependencies")))
    for dep in deps:
        check_name(f"dependency of task {task_name!r}:", dep)
    _check_settings(task_name, max_retries, timeout_seconds, max_parallel)
    is_generator = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    if stream_output and not is_generator:
        raise DefinitionError(
            f"task {task_name!r} has stream_output=True but is not a generator function; "
            "yield its chunks, or drop stream_output"
        )
    if is_generator and not stream_output:
        raise DefinitionError(
            f"task {task_name!r} is a generator function, whose output cannot be stored "
            "as one value; declare it with stream_output=True"
        )
    hints = _type_hints(task_name, func)
    returns = hints.get("return", Any)
    item_type: object = _yielded_type(returns) if stream_output else None
    parameters = _parameters(task_name, func, hints)
    cursor = _cursor(task_name, parameters) if stream_output else None
    return Task(
        name=task_name,
        fn=func,
        tags=tag_tuple,
        dependencies=deps,
        max_retries=max_retries,
        timeout_seconds=float(timeout_seconds),
        fail_safe=fail_safe,
        stream_output=stream_output,
        max_parallel=max_parallel,
        parameters=tuple(p for p in parameters if cursor is None or p.name != cursor),
        output_type=list[item_type] if stream_output else returns,  # type: ignore[valid-type]
        item_type=item_type,
        is_async=inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func),
        description=(inspect.getdoc(func) or "").strip().split("\n", 1)[0],
        cursor_parameter=cursor,
    )


def _cursor(task_name: str, parameters: tuple[TaskParameter, ...]) -> str | None:
    """``resume_from`` if the streaming task declares it as ``resume_from: int = 0``.

    Raises:
        DefinitionError: it is declared another way (the engine passes an int, and the
            default 0 keeps the task callable as a plain function).
    """
    found = next((p for p in parameters if p.name == CURSOR_PARAMETER), None)
    if found is None:
        return None
    if found.annotation not in (int, Any) or not found.has_default or found.default != 0:
        raise DefinitionError(
            f"task {task_name!r} declares {CURSOR_PARAMETER!r}, the streaming cursor, as "
            f"{found.annotation!r} with default {found.default!r}; declare it "
            f"'{CURSOR_PARAMETER}: int = 0' (the index of the next chunk to yield)"
        )
    return CURSOR_PARAMETER


def check_tag(task_name: str, tag: str) -> str:
    """Return ``tag`` if it is dot-separated letters, digits, ``_`` or ``-`` (no wildcard).

    Raises:
        DefinitionError: naming the task and the tag.
    """
    if not _TAG.match(tag):
        raise DefinitionError(
            f"tag {tag!r} of task {task_name!r} is invalid: use dot-separated segments of "
            "letters, digits, '_' or '-' (wildcards belong in lookups, not in tags)"
        )
    return tag


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):  # tags="etl" would otherwise be three one-letter tags
        return [values]
    items = list(values)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise DefinitionError(f"{what} must be strings, got {bad!r}")
    return items


def _check_settings(
    name: str, max_retries: int, timeout_seconds: float, max_parallel: int | None
) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise DefinitionError(
            f"max_retries of task {name!r} must be an int >= 0, got {max_retries!r}"
        )
    if not 0 < timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise DefinitionError(
            f"timeout of task {name!r} must be in (0, {MAX_TIMEOUT_SECONDS:g}] seconds "
            f"(Cloud Tasks' longest dispatch deadline), got {timeout_seconds!r}"
        )
    if max_parallel is not None and (isinstance(max_parallel, bool) or max_parallel < 1):
        raise DefinitionError(
            f"max_parallel of task {name!r} must be None (unbounded) or >= 1, got {max_parallel!r}"
        )


def _type_hints(name: str, func: Callable[..., object]) -> Mapping[str, object]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # a NameError for a type defined later, or a bad string
        raise DefinitionError(
            f"the type hints of task {name!r} do not resolve ({type(exc).__name__}: {exc}); "
            "define or import the types they name before the task (module level, not "
            "inside a function)"
        ) from exc


def _parameters(
    name: str, func: Callable[..., object], hints: Mapping[str, object]
) -> tuple[TaskParameter, ...]:
    parameters: list[TaskParameter] = []
    for parameter in inspect.signature(func).parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise DefinitionError(
                f"parameter {parameter.name!r} of task {name!r} is {parameter.kind.description}; "
                "task inputs are passed by name, so use plain or keyword-only parameters"
            )
        has_default = parameter.default is not parameter.empty
        parameters.append(
            TaskParameter(
                name=parameter.name,
                annotation=hints.get(parameter.name, Any),
                has_default=has_default,
                default=parameter.default if has_default else None,
            )
        )
    return tuple(parameters)


def _yielded_type(returns: object) -> object:
    """``X`` of ``Iterator[X]``, ``Generator[X, ...]``, ``AsyncIterator[X]`` (else Any)."""
    origin = typing.get_origin(returns)
    args = typing.get_args(returns)
    if origin in _STREAM_ORIGINS and args:
        return args[0]
    return Any
