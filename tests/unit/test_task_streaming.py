"""The streaming step function and chunk bookkeeping, without a store (core/tasks/streaming.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from core.domain.context import StepContext, StreamedOutput
from core.domain.status import Action
from core.engine.outputs import (
    CHUNKS_KEY,
    OutputStorage,
    StepChunks,
    is_stream_reference,
    stream_reference,
)
from core.errors import ConfigurationError, DefinitionError, NonRetryableStepError
from core.tasks import Pipeline, task
from core.tasks.runnable import compile_pipeline
from infra.memory.io_manager import MemoryIOManager


class Row(BaseModel):
    n: int


class Chunks:
    """A ``ChunkStream`` in a dict, recording every commit."""

    def __init__(self, stored: dict[int, Any] | None = None) -> None:
        self.stored = dict(stored or {})
        self.commits: list[int] = []

    def committed(self) -> int:
        count = 0
        while count in self.stored:
            count += 1
        return count

    def commit(self, index: int, value: Any) -> None:
        self.commits.append(index)
        self.stored[index] = value


def context(chunks: Chunks | None, payload: dict[str, Any]) -> StepContext[Any]:
    return StepContext(
        run_id="r",
        saga="p",
        step="rows",
        action=Action.EXECUTE,
        attempt=1,
        idempotency_key="r:rows",
        input=payload,
        outputs={},
        deadline_at=0.0,
        chunks=chunks,
    )


def run_step(pipeline: Pipeline, chunks: Chunks | None, payload: dict[str, Any]) -> object:
    saga = compile_pipeline(pipeline)
    return saga.steps["rows"].fn(context(chunks, payload))


@task(name="rows", stream_output=True)
def rows_with_cursor(count: int, resume_from: int = 0) -> Iterator[Row]:
    for n in range(resume_from, count):
        yield Row(n=n)


@task(name="rows", stream_output=True)
def rows_replayed(count: int) -> Iterator[Row]:
    for n in range(count):
        yield Row(n=n)


def test_the_cursor_is_not_a_pipeline_input_and_the_task_stays_callable() -> None:
    assert rows_with_cursor.cursor_parameter == "resume_from"
    assert [p.name for p in rows_with_cursor.parameters] == ["count"]
    schema = Pipeline("p", tasks=[rows_with_cursor]).plan().input_model.model_json_schema()
    assert set(schema["properties"]) == {"count"}
    assert [r.n for r in rows_with_cursor(3)] == [0, 1, 2]
    assert rows_replayed.cursor_parameter is None


@pytest.mark.parametrize(
    "signature", ["resume_from: str = '0'", "resume_from: int", "resume_from: int = 1"]
)
def test_a_cursor_declared_another_way_is_refused(signature: str) -> None:
    namespace: dict[str, Any] = {"Iterator": Iterator}
    exec(f"def gen(count: int, {signature}) -> Iterator[int]:\n    yield count", namespace)
    with pytest.raises(DefinitionError, match="resume_from: int = 0"):
        task(stream_output=True)(namespace["gen"])


def test_a_fresh_stream_commits_every_chunk_in_order_as_json() -> None:
    chunks = Chunks()
    out = run_step(Pipeline("p", tasks=[rows_with_cursor]), chunks, {"count": 4})
    assert out == StreamedOutput(4)
    assert chunks.commits == [0, 1, 2, 3]
    assert chunks.stored[2] == {"n": 2}


def test_a_resumed_stream_passes_the_cursor_and_commits_only_the_rest() -> None:
    chunks = Chunks({0: {"n": 0}, 1: {"n": 1}, 2: {"n": 2}})
    out = run_step(Pipeline("p", tasks=[rows_with_cursor]), chunks, {"count": 5})
    assert out == StreamedOutput(5)
    assert chunks.commits == [3, 4]


def test_a_resumed_stream_without_cursor_is_replayed_and_drops_committed_chunks() -> None:
    chunks = Chunks({0: {"n": 0}, 1: {"n": 1}})
    out = run_step(Pipeline("p", tasks=[rows_replayed]), chunks, {"count": 4})
    assert out == StreamedOutput(4)
    assert chunks.commits == [2, 3]


def test_a_gap_resumes_at_the_gap() -> None:
    chunks = Chunks({0: {"n": 0}, 2: {"n": 2}})
    run_step(Pipeline("p", tasks=[rows_with_cursor]), chunks, {"count": 3})
    assert chunks.commits == [1, 2]


def test_a_replayed_stream_shorter_than_what_was_committed_breaks_the_contract() -> None:
    chunks = Chunks({i: {"n": i} for i in range(5)})
    with pytest.raises(NonRetryableStepError, match="5 were already committed"):
        run_step(Pipeline("p", tasks=[rows_replayed]), chunks, {"count": 2})


def test_a_chunk_its_item_type_cannot_serialize_fails_without_retry() -> None:
    @task(name="rows", stream_output=True)
    def bad() -> Iterator[int]:
        yield object()  # type: ignore[misc]

    with pytest.raises(NonRetryableStepError, match="chunk 0"):
        run_step(Pipeline("p", tasks=[bad]), Chunks(), {})


def test_streaming_without_an_io_manager_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="I/O manager"):
        run_step(Pipeline("p", tasks=[rows_replayed]), None, {"count": 1})


def test_step_chunks_count_the_gap_free_prefix_in_the_io_manager() -> None:
    io = MemoryIOManager()
    chunks = StepChunks(io, run_id="r", step="s")
    assert chunks.committed() == 0
    for index in (0, 1, 3):
        chunks.commit(index, {"i": index})
    assert chunks.committed() == 2
    chunks.commit(1, {"i": 1})  # an idempotent replace
    assert io.list_chunks(run_id="r", step="s") == [0, 1, 3]


def test_a_stream_reference_resolves_to_its_chunks_and_a_lookalike_is_offloaded() -> None:
    io = MemoryIOManager()
    storage = OutputStorage(io_manager=io, inline_limit_bytes=1024)
    for index in range(3):
        io.save_chunk(run_id="r", step="s", index=index, value=index * 10)
    ref = stream_reference(3)
    assert is_stream_reference(ref) and ref == {CHUNKS_KEY: 3}
    assert storage.resolve(run_id="r", step="s", stored=ref) == [0, 10, 20]
    assert not is_stream_reference({CHUNKS_KEY: True})
    # A step returning that shape as data is offloaded, so a record holding it is real.
    stored = storage.store(run_id="r", step="t", value={CHUNKS_KEY: 3})
    assert not is_stream_reference(stored)
    assert storage.resolve(run_id="r", step="t", stored=stored) == {CHUNKS_KEY: 3}
