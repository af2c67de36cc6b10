"""Type-checked only (``make typecheck``): ``@task`` keeps the function's signature and result.

A task is called like its function, so a wrong argument is a type error, and the result
type is the function's own (a coroutine for an async task), never ``Any``.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import Any, assert_type

from core.tasks import Pipeline, PipelinePlan, Task, TaskRegistry, task


@task
def extract(limit: int = 10) -> list[int]:
    """A bare decorator."""
    return list(range(limit))


@task(tags=["etl"], max_retries=3, timeout=5)
def transform(extract: list[int], factor: float = 2.0) -> list[float]:
    """A decorator with arguments."""
    return [x * factor for x in extract]


@task(fail_safe=True)
async def load(transform: list[float]) -> float:
    """An async task."""
    return sum(transform)


@task(stream_output=True)
def batches(size: int) -> Iterator[list[int]]:
    """A streaming task."""
    yield list(range(size))


assert_type(extract(limit=3), list[int])
assert_type(transform([1, 2]), list[float])
pending = load([1.0])
_ = assert_type(pending, Coroutine[Any, Any, float])
pending.close()
assert_type(batches(2), Iterator[list[int]])
transform("not a list")  # type: ignore[arg-type]
extract(limit="3")  # type: ignore[arg-type]

registry = TaskRegistry([extract, transform, load])
assert_type(registry.get("extract"), Task[..., Any])
plan = Pipeline("etl", tags=["etl"], registry=registry).plan()
assert_type(plan, PipelinePlan)
assert_type(plan.order, tuple[str, ...])
assert_type(plan.levels, tuple[tuple[str, ...], ...])
