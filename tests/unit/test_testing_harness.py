"""The public test harness (``core.testing``) on the memory adapters: its own promises.

The protocol suite (``tests/engine``) uses the harness on every backend; these tests pin
what a user relies on that the protocol tests do not: the documented example runs, one
clock drives everything, and a pump that cannot finish says why.
"""

from __future__ import annotations

import doctest

import pytest

import core.testing.harness
from core import RunStatus, Saga, StepContext, StepStatus
from core.domain.status import Action
from core.ports.clock import FixedClock
from infra.memory.harness import memory_harness
from tests.support.sagas import HOUR, Calls, linear_saga, sleeper


def test_the_documented_example_runs() -> None:
    """The example in core.testing.harness's docstring passes as written."""
    results = doctest.testmod(core.testing.harness, raise_on_error=False)
    assert results.attempted > 0
    assert results.failed == 0


def test_the_queue_and_the_engine_share_the_given_clock() -> None:
    """A retry's backoff is due when the given clock, and only it, says so."""
    clock = FixedClock(start=1_000.0)
    calls = Calls()
    with memory_harness([linear_saga(calls, fail_at="a", failures=1)], clock=clock) as h:
        run_id = h.start("linear", {}).run.run_id
        h.deliver_due()  # a fails once; its retry is due 1 s later (FAST policy)
        assert h.snapshot(run_id).step("a").retry_at == 1_001.0
        assert h.deliver_due() == []
        h.advance(1.0)
        assert [result.is_done for result in h.deliver_due()] == [True]
        assert calls["a"] == 2


def test_a_message_the_engine_defers_is_released_with_its_delay() -> None:
    """deliver_due gives back what the engine asks to see again, due after its delay."""
    with memory_harness([sleeper()]) as h:
        run_id = h.start("sleeper", {}).run.run_id
        h.drain()
        nap = h.snapshot(run_id).step("nap")
        h.queue.enqueue(messages=[h.message(run_id, "nap", action=Action.RESUME, attempt=5)])
        [early] = h.deliver_due()
        assert not early.is_done
        assert h.deliver_due() == []  # released with the wake-up's remaining time
        assert h.snapshot(run_id).step("nap") == nap


def test_pump_names_a_wait_too_long_to_step_through() -> None:
    """A sleep beyond max_idle_seconds makes pump fail with the way out, not spin."""
    with memory_harness([sleeper()]) as h:
        h.start("sleeper", {})
        with pytest.raises(AssertionError, match=r"advance\(\) the clock past long waits"):
            h.pump(max_idle_seconds=HOUR / 2, advance_seconds=60.0)
        h.advance(HOUR)
        h.pump()
        assert {run.status for run in h.engine.runs.list(saga="sleeper")} == {RunStatus.COMPLETED}


def test_an_abandoned_claim_holds_the_step_until_its_lease_runs_out() -> None:
    """A lost worker's step is re-claimed only once its lease ends, as a new attempt."""
    calls = Calls()
    with memory_harness([linear_saga(calls)]) as h:
        run_id = h.start("linear", {}).run.run_id
        lost = h.abandon_claim(run_id, "a", lease_seconds=30.0)
        assert (lost.status, lost.attempt) == (StepStatus.RUNNING, 1)
        assert h.snapshot(run_id).run.status is RunStatus.RUNNING
        [held] = h.deliver_due()
        assert not held.is_done and held.retry_after_seconds == pytest.approx(30.0)
        h.pump()
        snapshot = h.snapshot(run_id)
        assert snapshot.run.status is RunStatus.COMPLETED
        assert snapshot.step("a").attempt == 2 and calls["a"] == 1


def test_a_second_worker_shares_the_store_queue_and_clock() -> None:
    """worker() serves other definitions over the same ports: a redeployment in a test."""
    saga = Saga("versioned")

    @saga.step
    def old(ctx: StepContext) -> str:
        return "old"

    renamed = Saga("versioned")

    @renamed.step
    def new(ctx: StepContext) -> str:
        return "new"

    with memory_harness([saga]) as h, h.worker([renamed]) as redeployed:
        run_id = h.start("versioned", {}).run.run_id
        assert redeployed.store is h.store and redeployed.clock is h.clock
        redeployed.pump()
        assert "no longer has step(s) old" in (h.snapshot(run_id).run.error or "")
