"""The engine starts the retention of a run's offloaded data when the run ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from core import RunStatus, Saga, StepContext
from core.ports.clock import FixedClock
from core.tasks import Pipeline, task
from core.tasks.runnable import compile_pipeline
from core.testing import SagaHarness
from infra.memory.io_manager import MemoryIOManager
from infra.memory.state_store import MemoryStateStore
from infra.memory.task_queue import MemoryTaskQueue


class RecordingIOManager(MemoryIOManager):
    """The memory I/O manager, remembering each ``mark_run_finished`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[str, float]] = []

    def mark_run_finished(self, *, run_id: str, finished_at: float) -> int:
        self.marks.append((run_id, finished_at))
        return super().mark_run_finished(run_id=run_id, finished_at=finished_at)


def harness_with(io: RecordingIOManager, *sagas: Saga[Any]) -> SagaHarness:
    clock = FixedClock()
    return SagaHarness(
        sagas,
        store=MemoryStateStore(),
        queue=MemoryTaskQueue(clock=clock.now),
        clock=clock,
        io_manager=io,
    )


def big_saga(*, output_size: int, fail: bool = False) -> Saga[Any]:
    saga: Saga[Any] = Saga("big")

    @saga.step
    def make(ctx: StepContext) -> str:
        return "x" * output_size

    @saga.step
    def last(ctx: StepContext) -> None:
        if fail:
            raise ValueError("no")

    return saga


def test_a_run_with_an_offloaded_output_is_marked_when_it_completes() -> None:
    """The final commit marks the run's objects, with the run's final updated_at."""
    io = RecordingIOManager()
    harness = harness_with(io, big_saga(output_size=100_000))

    done = harness.run("big", {})

    assert done.run.status is RunStatus.COMPLETED
    assert io.marks == [(done.run.run_id, done.run.updated_at)]


def test_a_compensated_run_with_an_offloaded_input_is_marked() -> None:
    """A run that ends compensated is marked too (its input went to the I/O manager)."""
    io = RecordingIOManager()
    harness = harness_with(io, big_saga(output_size=10, fail=True))

    done = harness.run("big", {"blob": "y" * 100_000})

    assert done.run.status is RunStatus.COMPENSATED
    assert io.marks == [(done.run.run_id, done.run.updated_at)]


def test_a_run_that_offloaded_nothing_costs_no_marking() -> None:
    """Small inputs and outputs: the I/O manager is not called at all."""
    io = RecordingIOManager()
    harness = harness_with(io, big_saga(output_size=10))

    assert harness.run("big", {}).run.status is RunStatus.COMPLETED
    assert io.marks == []


def test_a_redelivery_to_an_ended_run_marks_it_again() -> None:
    """A crash between the final commit and the mark heals on the next delivery."""
    io = RecordingIOManager()
    harness = harness_with(io, big_saga(output_size=100_000))
    done = harness.run("big", {})
    (last_message, _) = harness.handled[-1]

    harness.deliver(last_message)

    assert io.marks == [(done.run.run_id, done.run.updated_at)] * 2


def test_a_run_whose_task_streamed_is_marked_when_it_completes() -> None:
    """A streaming task's chunks are offloaded data: the run that ends marks them."""

    @task(stream_output=True)
    def numbers(count: int = 3) -> Iterator[int]:
        yield from range(count)

    @task
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    io = RecordingIOManager()
    harness = harness_with(io, compile_pipeline(Pipeline("sums", tasks=[numbers, total])))

    done = harness.run("sums", {})

    assert done.run.status is RunStatus.COMPLETED
    assert done.step("total").output == 3
    assert io.marks == [(done.run.run_id, done.run.updated_at)]


def test_a_run_whose_streaming_task_failed_after_some_chunks_is_marked_too() -> None:
    """Its step record has no output, but chunks were committed: they must expire too."""

    @task(stream_output=True, max_retries=0)
    def numbers(count: int = 5) -> Iterator[int]:
        yield 0
        yield 1
        raise ValueError("source went away")

    @task
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    io = RecordingIOManager()
    harness = harness_with(io, compile_pipeline(Pipeline("sums", tasks=[numbers, total])))

    done = harness.run("sums", {})

    assert done.run.status is RunStatus.COMPENSATED
    assert io.list_chunks(run_id=done.run.run_id, step="numbers") == [0, 1]
    assert io.marks == [(done.run.run_id, done.run.updated_at)]
