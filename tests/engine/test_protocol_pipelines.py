"""Pipelines on the step protocol, on every state store: a task is a step (core/tasks/runnable.py).

Each test compiles a pipeline onto the saga machinery and drives it through the harness
of the store under test (memory, SQLite, the Firestore emulator, DynamoDB on moto).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from pydantic import BaseModel

from core import RunStatus, StepStatus
from core.domain.records import Message
from core.engine.outputs import CHUNKS_KEY, REF_KEY
from core.engine.saga_runner import RunnerSettings
from core.errors import InputValidationError
from core.faults import FaultPlan
from core.tasks import Pipeline, task
from core.tasks.runnable import compile_pipeline
from core.testing import SagaHarness, SimulatedCrash
from functions.pipelines.etl import pipeline as etl_pipeline
from tests.support.backends.fixtures import MakeHarness

pytestmark = pytest.mark.protocol


class Point(BaseModel):
    x: int
    y: int


class Effects:
    """An idempotent side effect: one entry per (run, task), and how often each was written."""

    def __init__(self) -> None:
        self.done: dict[tuple[str, str], object] = {}
        self.writes: Counter[str] = Counter()

    def write(self, run_id: str, name: str, value: object) -> None:
        self.done.setdefault((run_id, name), value)
        self.writes[name] += 1


def diamond(effects: Effects, *, retries: int = 2) -> Pipeline:
    """source → left, right → join (join has two data upstreams)."""

    @task(name="source", max_retries=retries)
    def source(seed: int, run_id: str) -> Point:
        effects.write(run_id, "source", seed)
        return Point(x=seed, y=seed * 2)

    @task(name="left", max_retries=retries)
    def left(source: Point, run_id: str) -> int:
        effects.write(run_id, "left", source.x)
        return source.x + 1

    @task(name="right", max_retries=retries)
    async def right(source: Point, run_id: str) -> int:
        await asyncio.sleep(0)
        effects.write(run_id, "right", source.y)
        return source.y + 1

    @task(name="join", max_retries=retries)
    def join(left: int, right: int, run_id: str) -> list[int]:
        effects.write(run_id, "join", (left, right))
        return [left, right]

    return Pipeline("diamond", tasks=[join, left, right, source])


def start(h: SagaHarness, name: str, payload: object) -> str:
    return h.start(name, payload).run.run_id


def test_the_example_etl_runs_to_completion_with_typed_outputs(saga_harness: MakeHarness) -> None:
    """The bundle's ETL: each task one step, models across boundaries, audit fail-safe."""
    h = saga_harness([compile_pipeline(etl_pipeline)])
    snap = h.run("etl", {"row_count": 60, "seed": 3})
    assert snap.run.status is RunStatus.COMPLETED, snap.run.error
    assert {name: r.status for name, r in snap.steps.items()} == dict.fromkeys(
        ["audit", "extract", "load", "transform"], StepStatus.SUCCEEDED
    )
    loaded = snap.step("load").output
    assert loaded["orders"] + loaded["rejected"] == 60
    assert loaded["orders"] == len(snap.step("transform").output)
    assert set(loaded["totals_eur"]) <= {"north", "south", "east", "west"}
    assert snap.run.output["load"] == loaded
    assert snap.run.definition_hash == h.registry.get("etl").definition_hash
    assert all(r.attempt == 1 for r in snap.steps.values())


def test_large_task_outputs_go_through_the_io_manager_and_feed_downstream_tasks(
    saga_harness: MakeHarness,
) -> None:
    """Outputs over the inline limit are stored as references and loaded for downstreams."""
    settings = RunnerSettings(lease_grace_seconds=1.0, inline_output_limit_bytes=256)
    h = saga_harness([compile_pipeline(etl_pipeline)], settings=settings)
    snap = h.run("etl", {"row_count": 60, "seed": 3})
    assert snap.run.status is RunStatus.COMPLETED, snap.run.error
    assert snap.step("extract").output == {CHUNKS_KEY: 2}  # 60 rows in batches of 50
    assert REF_KEY in snap.step("transform").output
    assert snap.step("load").output["orders"] + snap.step("load").output["rejected"] == 60


def test_a_fan_in_task_runs_once_when_its_last_upstream_commits(
    saga_harness: MakeHarness,
) -> None:
    """Readiness: join is enqueued by the second of its upstreams to commit, not the first."""
    effects = Effects()
    h = saga_harness([compile_pipeline(diamond(effects))])
    run_id = start(h, "diamond", {"seed": 5, "run_id": "r"})
    h.deliver_due(limit=1)  # source
    first = h.deliver_due(limit=1)  # left or right
    assert len(first) == 1
    assert h.snapshot(run_id).step("join").status is StepStatus.PENDING
    assert [m.step for m in _queued(h)] == [n for n in ("left", "right") if effects.writes[n] == 0]
    h.pump()
    snap = h.snapshot(run_id)
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("join").output == [6, 11]
    assert effects.writes == Counter(source=1, left=1, right=1, join=1)


def test_a_diamond_under_duplicate_deliveries_runs_every_task_once(
    saga_harness: MakeHarness,
) -> None:
    """Every message delivered twice as the run goes, then all replayed: each task ran once."""
    effects = Effects()
    h = saga_harness([compile_pipeline(diamond(effects))])
    run_id = start(h, "diamond", {"seed": 2, "run_id": "r"})
    while batch := h.queue.lease_due(now=h.clock.now(), limit=10, lease_seconds=30):
        for item in batch:
            h.deliver(item.message)
            h.deliver(item.message)
            h.queue.ack(receipts=[item.receipt])
    for message, _ in list(h.handled):
        assert h.deliver(message).is_done
    h.pump()
    snap = h.snapshot(run_id)
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("join").output == [3, 5]
    assert effects.writes == Counter(source=1, left=1, right=1, join=1)
    assert effects.done[("r", "join")] == (3, 5)


def test_a_diamond_under_injected_failures_and_crashes_completes_each_task_once(
    saga_harness: MakeHarness,
) -> None:
    """Chaos faults (failures before, crashes after the task ran): the run still completes.

    A crash after the task ran and before the commit makes a redelivery run it again, so
    the side effect is idempotent (one entry per run and task) and counted by its writes.
    """
    effects = Effects()
    faults = FaultPlan.parse("diamond.*:fail@0.25;diamond.*:crash@0.25;seed=5")
    h = saga_harness([compile_pipeline(diamond(effects, retries=20))], faults=faults)
    run_ids = [start(h, "diamond", {"seed": n, "run_id": f"r{n}"}) for n in range(4)]
    crashes = 0
    for _ in range(500):
        try:
            h.pump(max_deliveries=2000)
            break
        except SimulatedCrash:
            crashes += 1  # the leased message comes back once its lease runs out
    assert crashes > 0
    for n, run_id in enumerate(run_ids):
        snap = h.snapshot(run_id)
        assert snap.run.status is RunStatus.COMPLETED, snap.run.error
        assert snap.step("join").output == [n + 1, 2 * n + 1]
        assert effects.done[(f"r{n}", "join")] == (n + 1, 2 * n + 1)
    assert {key[1] for key in effects.done} == {"source", "left", "right", "join"}
    assert len(effects.done) == 16  # exactly one effect per run and task
    assert sum(effects.writes.values()) >= 16


def test_a_failed_fail_safe_task_hands_none_downstream_and_the_run_completes(
    saga_harness: MakeHarness,
) -> None:
    """fail_safe: FAILED after its attempts, no compensation, data downstream gets None."""
    attempts: Counter[str] = Counter()

    @task(fail_safe=True, max_retries=1)
    def enrich(base: int) -> int:
        attempts["enrich"] += 1
        raise RuntimeError("enrichment service down")

    @task
    def base(value: int) -> int:
        return value * 10

    @task(dependencies=["enrich"])
    def report(base: int) -> str:
        return f"base={base}"

    @task
    def merge(base: int, enrich: int | None) -> dict[str, int | None]:
        return {"base": base, "enrich": enrich}

    h = saga_harness([compile_pipeline(Pipeline("safe", tasks=[report, merge, enrich, base]))])
    snap = h.run("safe", {"value": 4})
    assert snap.run.status is RunStatus.COMPLETED, snap.run.error
    assert snap.run.error is None
    failed = snap.step("enrich")
    assert failed.status is StepStatus.FAILED
    assert "enrichment service down" in (failed.error_detail or "")
    assert failed.attempt == 2 and attempts["enrich"] == 2
    assert snap.step("merge").output == {"base": 40, "enrich": None}
    assert snap.step("report").output == "base=40"
    assert snap.run.output["enrich"] is None


def test_a_failing_task_stops_the_run_and_skips_what_follows(saga_harness: MakeHarness) -> None:
    """Not fail-safe: its attempts used up, later tasks are SKIPPED and nothing is undone."""

    @task(max_retries=0)
    def boom(value: int) -> int:
        raise ValueError(f"bad value {value}")

    @task
    def after(boom: int) -> int:
        return boom

    h = saga_harness([compile_pipeline(Pipeline("stops", tasks=[after, boom]))])
    snap = h.run("stops", {"value": 1})
    assert snap.run.status is RunStatus.COMPENSATED
    assert "boom" in (snap.run.error or "")
    assert snap.step("boom").status is StepStatus.FAILED
    assert snap.step("boom").attempt == 1
    assert snap.step("after").status is StepStatus.SKIPPED


def test_max_retries_and_timeout_are_the_steps_retry_policy(saga_harness: MakeHarness) -> None:
    """A task that times out, then fails, then succeeds within max_retries=2 completes."""
    attempts: Counter[str] = Counter()

    @task(max_retries=2, timeout=0.2)
    async def flaky(value: int) -> int:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            await asyncio.sleep(30)  # over the timeout: the attempt is abandoned
        if attempts["flaky"] == 2:
            raise ConnectionError("reset")
        return value + 1

    @task(max_retries=1)
    def never(value: int) -> int:
        attempts["never"] += 1
        raise ConnectionError("always")

    h = saga_harness([compile_pipeline(Pipeline("retries", tasks=[flaky]))])
    snap = h.run("retries", {"value": 1})
    assert snap.run.status is RunStatus.COMPLETED
    assert snap.step("flaky").output == 2
    assert snap.step("flaky").attempt == 3
    h2 = saga_harness([compile_pipeline(Pipeline("gives-up", tasks=[never]))])
    snap2 = h2.run("gives-up", {"value": 1})
    assert snap2.run.status is RunStatus.COMPENSATED
    assert snap2.step("never").attempt == 2 and attempts["never"] == 2
    assert h.registry.get("retries").steps["flaky"].timeout_seconds == 0.2


def test_pipeline_input_is_validated_before_anything_is_written(
    saga_harness: MakeHarness,
) -> None:
    """Bad input names the field; missing required input too; nothing is stored."""
    h = saga_harness([compile_pipeline(etl_pipeline)])
    with pytest.raises(InputValidationError) as bad:
        h.start("etl", {"row_count": "many"})
    assert bad.value.errors[0]["loc"] == ["row_count"]
    with pytest.raises(InputValidationError) as extra:
        h.start("etl", {"rows": 3})
    assert extra.value.errors[0]["loc"] == ["rows"]
    assert h.engine.runs.list(saga="etl") == []


def _queued(h: SagaHarness) -> list[Message]:
    batch = h.queue.lease_due(now=h.clock.now(), limit=10, lease_seconds=0.001)
    for item in batch:
        h.queue.release(receipt=item.receipt, delay_seconds=0)
    return sorted((item.message for item in batch), key=lambda m: m.step)
