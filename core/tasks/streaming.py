"""The step function of a streaming task: chunks committed one by one, resumable.

The generator runs inside its step's attempt. Each yielded chunk is serialized through
the task's item type and committed through ``ctx.chunks`` (the I/O manager) before the
next one is asked for, so chunks are committed in order and a crash loses at most the
chunk being produced. An attempt starts by counting the committed chunks (one listing;
no state-store write per chunk) and produces the rest:

* a task that declares ``resume_from: int = 0`` receives that count and yields from
  there;
* any other streaming task is replayed from chunk 0 and the chunks already committed
  are dropped without being saved again.

Either way every index is saved by the attempt that first produces it or replaced by an
equal chunk (the generator is deterministic per index: the contract in
``core/tasks/task.py``), so the step's output, ``StreamedOutput(count)``, is each chunk
exactly once, in order.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from core.domain.context import ChunkStream, StepContext, StreamedOutput
from core.errors import ConfigurationError, NonRetryableStepError
from core.tasks.plan import PlanNode
from core.tasks.task import Task

if TYPE_CHECKING:
    from pydantic import TypeAdapter

Arguments = Callable[[PlanNode, StepContext[Any]], dict[str, Any]]
"""Builds a task's keyword arguments from the step context (``runnable._arguments``)."""


def stream_step_function(node: PlanNode, arguments: Arguments) -> Callable[[StepContext[Any]], Any]:
    """The step function that runs ``node``'s generator and commits its chunks."""
    task = node.task

    if task.is_async:

        async def run_async_stream(ctx: StepContext[Any]) -> StreamedOutput:
            chunks, start, kwargs = _begin(node, ctx, arguments)
            writer = _Writer(node, chunks, start, first=_first(task, start))
            stream: AsyncIterator[object] = task.fn(**kwargs)
            async for item in stream:
                writer.take(item)
            return writer.done()

        return run_async_stream

    def run_stream(ctx: StepContext[Any]) -> StreamedOutput:
        chunks, start, kwargs = _begin(node, ctx, arguments)
        writer = _Writer(node, chunks, start, first=_first(task, start))
        stream: Iterator[object] = task.fn(**kwargs)
        for item in stream:
            writer.take(item)
        return writer.done()

    return run_stream


def _begin(
    node: PlanNode, ctx: StepContext[Any], arguments: Arguments
) -> tuple[ChunkStream, int, dict[str, Any]]:
    """The chunk stream, the index to resume from, and the generator's arguments.

    Raises:
        ConfigurationError: no I/O manager is configured, so chunks cannot be kept.
    """
    chunks = ctx.chunks
    if chunks is None:
        raise ConfigurationError(
            f"task {node.name!r} streams its output (stream_output=True), whose chunks are "
            "stored through the I/O manager, and none is configured: configure one (every "
            "deployment and `relay dev` have one) or return a list"
        )
    kwargs = arguments(node, ctx)
    start = chunks.committed()
    if node.task.cursor_parameter is not None:
        kwargs[node.task.cursor_parameter] = start
    return chunks, start, kwargs


def _first(task: Task[..., Any], start: int) -> int:
    """The index of the generator's first chunk: ``start`` with a cursor, else 0."""
    return start if task.cursor_parameter is not None else 0


class _Writer:
    """Commits chunks from index ``first`` on, skipping those below ``start``."""

    def __init__(self, node: PlanNode, chunks: ChunkStream, start: int, *, first: int) -> None:
        self._node = node
        self._chunks = chunks
        self._start = start
        self._next = first
        self._adapter = _item_adapter(node.task)

    def take(self, item: object) -> None:
        """Commit ``item`` as the next chunk (or drop it: already committed)."""
        index = self._next
        self._next += 1
        if index < self._start:
            return
        try:
            value = self._adapter.dump_python(item, mode="json", warnings=False)
        except Exception as exc:  # pydantic's serialization errors, or the value's own
            raise NonRetryableStepError(
                f"task {self._node.name!r} yielded chunk {index}, which its item type "
                f"cannot serialize as JSON ({type(exc).__name__}: {exc})"
            ) from exc
        self._chunks.commit(index, value)

    def done(self) -> StreamedOutput:
        """The step's output once the generator is exhausted.

        Raises:
            NonRetryableStepError: a generator with ``resume_from`` ended before the
                chunks already committed (it broke the resume contract).
        """
        if self._next < self._start:
            raise NonRetryableStepError(
                f"task {self._node.name!r} ended after {self._next} chunk(s), but "
                f"{self._start} were already committed by an earlier attempt: a streaming "
                "task must yield the same chunks for the same inputs on every attempt"
            )
        return StreamedOutput(self._next)


@functools.cache
def _item_adapter(task: Task[..., Any]) -> TypeAdapter[Any]:
    """The adapter of the task's chunk type, built once per task."""
    from pydantic import TypeAdapter

    return TypeAdapter(task.item_type)  # type: ignore[arg-type]  # an annotation
