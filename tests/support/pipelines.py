"""Tasks made from a description instead of a ``def``: random DAGs for properties and benches."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from core.tasks.task import DEFAULT_MAX_RETRIES, Task, build_task


def synthetic_task(
    name: str,
    data_upstream: Iterable[str] = (),
    control_upstream: Iterable[str] = (),
    *,
    inputs: Iterable[str] = (),
    output: object = int,
    parameter_type: object = int,
    tags: Iterable[str] = (),
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> Task[..., Any]:
    """A task named ``name`` with one ``parameter_type`` parameter per data upstream.

    ``inputs`` adds parameters named after no task (pipeline inputs, ``int``); the
    function returns 0 and declares ``output``.
    """
    names = [*data_upstream, *inputs]

    def fn(**kwargs: object) -> object:
        return 0

    fn.__name__ = fn.__qualname__ = name
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    )
    annotations: dict[str, object] = {n: parameter_type for n in data_upstream}
    annotations.update({n: int for n in inputs})
    fn.__annotations__ = {**annotations, "return": output}
    return build_task(
        fn,
        name=name,
        tags=tags,
        dependencies=control_upstream,
        max_retries=max_retries,
        timeout_seconds=30.0,
        fail_safe=False,
        stream_output=False,
        max_parallel=None,
    )
