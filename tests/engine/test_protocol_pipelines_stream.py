"""Streaming tasks on the step protocol, on every state store (core/tasks/streaming.py).

A streaming task's chunks go through the harness's I/O manager one by one; its record
keeps only their count; the consumer receives them in order. Crashes mid-stream (a
``SimulatedCrash`` out of the generator, where a killed worker stops) and duplicate
deliveries leave every chunk stored once and received once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from core import RunStatus, StepStatus
from core.engine.outputs import CHUNKS_KEY
from core.tasks import Pipeline, Task, task
from core.tasks.runnable import compile_pipeline
from core.testing import SagaHarness, SimulatedCrash
from tests.support.backends.fixtures import MakeHarness

pytestmark = pytest.mark.protocol


class Trace:
    """What the generator was asked for and yielded, per attempt; what the consumer got."""

    def __init__(self, *, crash_after: int | None = None) -> None:
        self.crash_after = crash_after
        self.starts: list[int] = []
        self.yielded: list[int] = []
        self.received: list[list[int]] = []


def streaming(trace: Trace, *, cursor: bool, is_async: bool = False) -> Pipeline:
    """numbers (streams ``count`` chunks, squares) → total (a consumer of the list)."""

    def chunk(index: int) -> int:
        # The crash fires when the generator is asked for the chunk after ``crash_after``,
        # once ``crash_after`` has been committed: the first attempt dies mid-stream.
        if trace.crash_after is not None and index == trace.crash_after + 1:
            trace.crash_after = None
            raise SimulatedCrash
        trace.yielded.append(index)
        return index * index

    source: Task[..., Any]
    if is_async:

        @task(name="numbers", stream_output=True, max_retries=3)
        async def numbers_async(count: int) -> AsyncIterator[int]:
            trace.starts.append(0)
            for index in range(count):
                yield chunk(index)

        source = numbers_async
    elif cursor:

        @task(name="numbers", stream_output=True, max_retries=3)
        def numbers_cursor(count: int, resume_from: int = 0) -> Iterator[int]:
            trace.starts.append(resume_from)
            for index in range(resume_from, count):
                yield chunk(index)

        source = numbers_cursor
    else:

        @task(name="numbers", stream_output=True, max_retries=3)
        def numbers_replay(count: int) -> Iterator[int]:
            trace.starts.append(0)
            for index in range(count):
                yield chunk(index)

        source = numbers_replay

    @task(name="total")
    def total(numbers: list[int]) -> int:
        trace.received.append(list(numbers))
        return sum(numbers)

    return Pipeline("squares", tasks=[source, total])


def _finish(h: SagaHarness, run_id: str) -> None:
    """Pump until the run ends, letting the crashed attempt's lease run out."""
    for _ in range(20):
        try:
            h.pump(max_deliveries=200)
        except SimulatedCrash:
            h.advance(120.0)
            continue
        if h.snapshot(run_id).run.status.is_terminal:
            return
        h.advance(120.0)
    raise AssertionError(f"run {run_id} did not end: {h.snapshot(run_id).run.status}")


def _check(h: SagaHarness, run_id: str, trace: Trace, count: int) -> None:
    snap = h.snapshot(run_id)
    assert snap.run.status is RunStatus.COMPLETED, snap.run.error
    assert snap.step("numbers").output == {CHUNKS_KEY: count}
    assert snap.step("total").status is StepStatus.SUCCEEDED
    assert snap.step("total").output == sum(i * i for i in range(count))
    assert h.io_manager is not None
    assert h.io_manager.list_chunks(run_id=run_id, step="numbers") == list(range(count))
    chunks = [h.io_manager.load_chunk(run_id=run_id, step="numbers", index=i) for i in range(count)]
    assert chunks == [i * i for i in range(count)]
    assert trace.received and all(r == chunks for r in trace.received)


def test_a_stream_feeds_its_consumer_in_order_and_its_record_keeps_a_count(
    saga_harness: MakeHarness,
) -> None:
    trace = Trace()
    h = saga_harness([compile_pipeline(streaming(trace, cursor=True))])
    snap = h.run("squares", {"count": 25})
    _check(h, snap.run.run_id, trace, 25)
    assert trace.starts == [0]
    assert trace.yielded == list(range(25))


def test_an_empty_stream_gives_its_consumer_an_empty_list(saga_harness: MakeHarness) -> None:
    trace = Trace()
    h = saga_harness([compile_pipeline(streaming(trace, cursor=False))])
    snap = h.run("squares", {"count": 0})
    _check(h, snap.run.run_id, trace, 0)


def test_duplicate_deliveries_store_and_deliver_every_chunk_once(
    saga_harness: MakeHarness,
) -> None:
    """Every message delivered twice as the run goes, then all replayed."""
    trace = Trace()
    h = saga_harness([compile_pipeline(streaming(trace, cursor=True))])
    run_id = h.start("squares", {"count": 12}).run.run_id
    while batch := h.queue.lease_due(now=h.clock.now(), limit=10, lease_seconds=30):
        for item in batch:
            h.deliver(item.message)
            h.deliver(item.message)
            h.queue.ack(receipts=[item.receipt])
    for message, _ in list(h.handled):
        assert h.deliver(message).is_done
    _check(h, run_id, trace, 12)
    assert trace.yielded == list(range(12))  # the stream ran once
    assert len(trace.received) == 1


@pytest.mark.parametrize("cursor", [True, False], ids=["resume_from", "replay"])
def test_a_crash_mid_stream_resumes_after_the_last_committed_chunk(
    saga_harness: MakeHarness, cursor: bool
) -> None:
    """Attempt 1 dies after committing chunks 0..6; the redelivery produces the rest."""
    trace = Trace(crash_after=6)
    h = saga_harness([compile_pipeline(streaming(trace, cursor=cursor))])
    run_id = h.start("squares", {"count": 15}).run.run_id
    _finish(h, run_id)
    _check(h, run_id, trace, 15)
    assert trace.starts == ([0, 7] if cursor else [0, 0])
    # With a cursor nothing is produced twice; a replay produces 0..6 again, unsaved.
    expected = list(range(15)) if cursor else [*range(7), *range(15)]
    assert trace.yielded == expected
    assert h.snapshot(run_id).step("numbers").execute_attempts == 2


def test_an_async_generator_streams_and_resumes(saga_harness: MakeHarness) -> None:
    trace = Trace(crash_after=2)
    h = saga_harness([compile_pipeline(streaming(trace, cursor=False, is_async=True))])
    run_id = h.start("squares", {"count": 6}).run.run_id
    _finish(h, run_id)
    _check(h, run_id, trace, 6)
