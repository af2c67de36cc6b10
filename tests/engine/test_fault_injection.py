"""RELAY_FAULTS rules acting on the engine, on every state store."""

from __future__ import annotations

import pytest

from core import RunStatus
from core.faults import FaultPlan
from core.testing import SimulatedCrash
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


def test_a_crash_rule_ends_the_delivery_after_the_step_ran(saga_harness: MakeHarness) -> None:
    """A crash ends the worker after the step function ran and before the commit."""
    calls = Calls()
    h = saga_harness([linear_saga(calls)], faults=FaultPlan.parse("linear.a:crash@1"))
    started = h.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    with pytest.raises(SimulatedCrash):
        h.engine.handle(item.message)
    assert calls["a"] == 1
    assert h.snapshot(started.run.run_id).step("a").status.value == "RUNNING"
