"""RELAY_FAULTS parsing and the decisions it drives."""

from __future__ import annotations

import pytest

from core import ConfigurationError, RunStatus
from core.faults import FaultKind, FaultPlan
from tests.support.sagas import Calls, linear_saga
from tests.unit.harness import Harness


def test_rules_parse_with_defaults_and_seed() -> None:
    """Targets default to any saga and the execute action; seed is recorded."""
    plan = FaultPlan.parse(
        "order.charge:fail@0.2; *:crash@0.05 ;*:delay=0.5s@1;b/compensate:fail@1;seed=7"
    )
    assert plan.seed == 7
    first = plan.rules[0]
    assert (first.saga, first.step, first.action, first.kind, first.probability) == (
        "order",
        "charge",
        "execute",
        FaultKind.FAIL,
        0.2,
    )
    assert plan.rules[2].delay_seconds == 0.5
    assert plan.rules[3].action == "compensate"
    assert FaultPlan.parse("").is_empty


@pytest.mark.parametrize(
    "spec",
    [
        "fail@0.1",
        "*:explode@0.1",
        "*:fail",
        "*:fail@2",
        "*:fail@x",
        "*:delay@0.1",
        "*:fail=3@0.1",
        "seed=x",
    ],
)
def test_malformed_rules_raise_configuration_errors(spec: str) -> None:
    """Each malformed rule is refused with RELAY_FAULTS named in the message."""
    with pytest.raises(ConfigurationError, match="RELAY_FAULTS"):
        FaultPlan.parse(spec)


def test_seeded_plans_make_the_same_choices() -> None:
    """Two plans with the same seed decide identically."""
    a = FaultPlan.parse("*:fail@0.5;seed=3")
    b = FaultPlan.parse("*:fail@0.5;seed=3")
    picks = [
        (
            a.should(FaultKind.FAIL, saga="s", step="x", action="execute"),
            b.should(FaultKind.FAIL, saga="s", step="x", action="execute"),
        )
        for _ in range(50)
    ]
    assert all(x == y for x, y in picks)
    assert not a.should(FaultKind.FAIL, saga="s", step="x", action="compensate")


def test_injected_failures_are_retried_like_real_ones() -> None:
    """A fail rule makes attempts fail before the step runs; retries then succeed."""
    calls = Calls()
    h = Harness([linear_saga(calls)], faults=FaultPlan.parse("linear.b:fail@0.5;seed=1"))
    started = h.engine.runs.start("linear", {})
    h.pump()
    snap = h.engine.runs.get(started.run.run_id)
    assert snap.run.status in (RunStatus.COMPLETED, RunStatus.COMPENSATED)
    assert calls["b"] <= snap.step("b").attempt


def test_crash_rule_exits_the_process_after_the_step_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash rule hard-exits after the step function ran and before the commit."""
    calls = Calls()
    exits: list[int] = []

    class Exited(BaseException):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr("core.engine.saga_runner.os._exit", fake_exit)
    h = Harness([linear_saga(calls)], faults=FaultPlan.parse("linear.a:crash@1"))
    started = h.engine.runs.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    with pytest.raises(Exited):
        h.engine.handle(item.message)
    assert exits == [137] and calls["a"] == 1
    assert h.engine.runs.get(started.run.run_id).step("a").status.value == "RUNNING"


def test_seeded_plans_differ_between_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A respawned worker (another pid) does not replay the crashed worker's choices."""

    def picks(pid: int) -> list[bool]:
        monkeypatch.setattr("core.faults.os.getpid", lambda: pid)
        plan = FaultPlan.parse("*:crash@0.5;seed=1")
        return [
            plan.should(FaultKind.CRASH, saga="s", step="x", action="execute") for _ in range(40)
        ]

    assert picks(100) == picks(100)
    assert picks(100) != picks(101)


def test_rules_match_any_saga_when_the_caller_does_not_know_it() -> None:
    """A saga-qualified rule still fires for a caller that knows only step and action."""
    plan = FaultPlan.parse("order.charge:duplicate@1")
    assert plan.should(FaultKind.DUPLICATE, saga=None, step="charge", action="execute")
    assert not plan.should(FaultKind.DUPLICATE, saga="other", step="charge", action="execute")
