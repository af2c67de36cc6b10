"""Type-checked only (``make typecheck``): testing a saga with ``core.testing``, as users do."""

from __future__ import annotations

from typing import assert_type

from pydantic import BaseModel

from core import RunSnapshot, RunStatus, Saga, StepContext
from core.domain.records import Message, RunRecord
from core.engine.triggers import EventOutcome
from core.ports.clock import FixedClock
from core.testing import SagaHarness
from infra.memory.harness import memory_harness


class Greeting(BaseModel):
    """Input of the saga under test."""

    name: str


greet = Saga("greet", input_model=Greeting)


@greet.step
def hello(ctx: StepContext[Greeting]) -> str:
    """The step under test."""
    return f"hello {ctx.input.name}"


def check_greet_completes() -> None:
    """What a user's test looks like, with the types it relies on."""
    clock = FixedClock()
    with memory_harness([greet], clock=clock) as harness:
        assert_type(harness, SagaHarness)
        snapshot = harness.run("greet", {"name": "ada"})
        assert_type(snapshot, RunSnapshot)
        assert snapshot.run.status is RunStatus.COMPLETED
        started = harness.start("greet", Greeting(name="bob").model_dump())
        assert_type(started.run, RunRecord)
        message = harness.message(started.run.run_id, "hello")
        assert_type(message, Message)
        assert_type(harness.deliver(message).is_done, bool)
        assert_type(harness.drain(), int)
        assert_type(harness.pump(max_deliveries=10), int)
        harness.advance(60.0)
        assert_type(harness.publish("greetings.sent", {"to": "ada"}, event_id="e1"), EventOutcome)
        assert_type(harness.snapshot(started.run.run_id), RunSnapshot)
        harness.advance("soon")  # type: ignore[arg-type]  # the clock moves by seconds
