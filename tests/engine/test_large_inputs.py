"""Run inputs over the inline limit, on every state store: offloaded, referenced, resolved."""

from __future__ import annotations

from typing import Any

import pytest

from core import RunStatus, Saga, StepContext
from core.engine.outputs import INPUT_STEP
from core.engine.saga_runner import RunnerSettings
from core.errors import IdempotencyKeyReusedError, InputTooLargeError
from core.ports.io_manager import IOManager
from core.testing import SagaHarness
from tests.support.backends.fixtures import MakeHarness

pytestmark = pytest.mark.protocol

MIB_NAME = "x" * 1_000_000
"""About 1 MiB of input: over a DynamoDB item (400 KB) and, with the run's other fields,
over a Firestore document (1 MiB)."""


def echo_saga(seen: list[int]) -> Saga[Any]:
    """A two-step saga whose steps check the input they receive."""
    saga: Saga[Any] = Saga("echo")

    @saga.step
    def measure(ctx: StepContext) -> int:
        seen.append(len(ctx.input["name"]))
        return len(ctx.input["name"])

    @saga.step
    def check(ctx: StepContext) -> bool:
        seen.append(len(ctx.input["name"]))
        return bool(ctx.input["name"] == MIB_NAME and ctx.outputs["measure"] == len(MIB_NAME))

    return saga


def stored_input(harness: SagaHarness, run_id: str) -> Any:
    return harness.snapshot(run_id).run.input


def io_of(harness: SagaHarness) -> IOManager:
    assert harness.io_manager is not None
    return harness.io_manager


def test_a_one_mib_input_is_offloaded_and_steps_receive_it(saga_harness: MakeHarness) -> None:
    """The run record keeps a reference; every step and the resolved view see the input."""
    seen: list[int] = []
    harness = saga_harness([echo_saga(seen)])

    done = harness.run("echo", {"name": MIB_NAME})

    assert done.run.status is RunStatus.COMPLETED
    assert seen == [len(MIB_NAME)] * 2
    assert done.step("check").output is True
    reference = stored_input(harness, done.run.run_id)
    assert set(reference) == {"$ref", "bytes", "sha256"}
    assert reference["bytes"] > 1_000_000
    assert io_of(harness).list_steps(run_id=done.run.run_id) == [INPUT_STEP]
    view = harness.engine.runs.resolved(done)
    assert view.run.input == {"name": MIB_NAME}


def test_a_small_input_stays_inline(saga_harness: MakeHarness) -> None:
    """Under the inline limit nothing goes to the I/O manager."""
    harness = saga_harness([echo_saga([])])

    run_id = harness.start("echo", {"name": "ada"}).run.run_id

    assert stored_input(harness, run_id) == {"name": "ada"}
    assert io_of(harness).list_steps(run_id=run_id) == []


def test_input_shaped_like_a_reference_is_offloaded_not_misread(
    saga_harness: MakeHarness,
) -> None:
    """User input with exactly a reference's keys is stored as a reference to itself."""
    lookalike = {"$ref": "s3://elsewhere/secret", "bytes": 1, "sha256": "0" * 64}
    saga: Saga[Any] = Saga("lookalike")
    received: list[Any] = []

    @saga.step
    def only(ctx: StepContext) -> None:
        received.append(ctx.input)

    harness = saga_harness([saga])

    done = harness.run("lookalike", lookalike)

    assert done.run.status is RunStatus.COMPLETED
    assert received == [lookalike]
    assert done.run.input != lookalike
    assert harness.engine.runs.resolved(done).run.input == lookalike


def test_same_key_same_large_input_is_the_same_run_other_input_is_refused(
    saga_harness: MakeHarness,
) -> None:
    """A retried start matches by content digest; another input keeps the run's own."""
    harness = saga_harness([echo_saga([])])

    first = harness.start("echo", {"name": MIB_NAME}, idempotency_key="k-large")
    again = harness.start("echo", {"name": MIB_NAME}, idempotency_key="k-large")
    with pytest.raises(IdempotencyKeyReusedError):
        harness.start("echo", {"name": "y" * 1_000_000}, idempotency_key="k-large")

    assert (first.is_created, again.is_created) == (True, False)
    assert again.run.run_id == first.run.run_id
    snapshot = harness.snapshot(first.run.run_id)
    assert harness.engine.runs.resolved(snapshot).run.input == {"name": MIB_NAME}


def test_an_input_over_the_maximum_is_refused_with_nothing_written(
    saga_harness: MakeHarness,
) -> None:
    """An input larger than any run keeps raises InputTooLargeError before any write."""
    harness = saga_harness([echo_saga([])], settings=RunnerSettings(max_input_bytes=500_000))

    with pytest.raises(InputTooLargeError, match="echo") as caught:
        harness.start("echo", {"name": MIB_NAME}, idempotency_key="k-too-large")

    assert caught.value.limit_bytes == 500_000
    assert harness.engine.runs.list(saga="echo") == []


def test_the_view_of_a_run_whose_input_expired_shows_the_reference(
    saga_harness: MakeHarness,
) -> None:
    """When the bucket's lifecycle deleted an offloaded input, the view shows its reference."""
    harness = saga_harness([echo_saga([])])
    run_id = harness.start("echo", {"name": MIB_NAME}).run.run_id

    assert io_of(harness).clear_run(run_id=run_id) == 1
    snapshot = harness.snapshot(run_id)

    assert harness.engine.runs.resolved(snapshot).run.input == snapshot.run.input


def test_a_run_output_over_the_inline_limit_is_offloaded_and_shown(
    saga_harness: MakeHarness,
) -> None:
    """Step outputs that fit their records can add up to a run output that does not."""
    saga: Saga[Any] = Saga("wide")
    parts = [f"part{i}" for i in range(8)]
    for name in parts:

        @saga.step(name=name)
        def part(ctx: StepContext) -> str:
            return "z" * 60_000  # under the 64 KiB inline limit: kept in the step record

    harness = saga_harness([saga])

    done = harness.run("wide", {})

    assert done.run.status is RunStatus.COMPLETED
    assert all(done.step(name).output == "z" * 60_000 for name in parts)
    assert set(done.run.output) == {"$ref", "bytes"}
    shown = harness.engine.runs.resolved(done).run.output
    assert shown == {name: "z" * 60_000 for name in parts}
