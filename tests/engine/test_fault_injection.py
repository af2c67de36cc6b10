"""RELAY_FAULTS rules acting on the engine, on every state store."""

from __future__ import annotations

import pytest

from core import RunStatus
from core.faults import FaultPlan
from tests.support.backends.fixtures import MakeHarness
from tests.support.sagas import Calls, linear_saga

pytestmark = pytest.mark.protocol


def test_injected_failures_are_retried_like_real_ones(saga_harness: MakeHarness) -> None:
    """A fail rule makes attempts fail before the step runs; retries then succeed."""
    calls = Calls()
    h = saga_harness([linear_saga(calls)], faults=FaultPlan.parse("linear.b:fail@0.5;seed=1"))
    snap = h.run("linear", {})
    assert snap.run.status in (RunStatus.COMPLETED, RunStatus.COMPENSATED)
    assert calls["b"] <= snap.step("b").attempt


def test_crash_rule_exits_the_process_after_the_step_ran(
    saga_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash rule hard-exits after the step function ran and before the commit."""
    calls = Calls()
    exits: list[int] = []

    class Exited(BaseException):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr("core.engine.saga_runner.os._exit", fake_exit)
    h = saga_harness([linear_saga(calls)], faults=FaultPlan.parse("linear.a:crash@1"))
    started = h.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    with pytest.raises(Exited):
        h.engine.handle(item.message)
    assert exits == [137] and calls["a"] == 1
    assert h.snapshot(started.run.run_id).step("a").status.value == "RUNNING"
