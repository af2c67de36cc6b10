"""RELAY_FAULTS parsing and the decisions it drives."""

from __future__ import annotations

import subprocess
import sys
from typing import NoReturn

import pytest

from core import ConfigurationError, RunStatus
from core.engine.engine import Engine
from core.engine.executor import StepExecutor
from core.faults import CRASH_EXIT_CODE, FaultInjectingExecutor, FaultKind, FaultPlan
from functions.settings import Settings
from functions.wiring import build_executor
from infra.memory.io_manager import MemoryIOManager
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


def test_crash_rule_exits_the_process_after_the_step_ran() -> None:
    """A crash rule ends the process after the step function ran and before the commit."""
    calls = Calls()
    crashes: list[str] = []

    class Crashed(BaseException):
        pass

    def crash() -> NoReturn:
        crashes.append("crash")
        raise Crashed

    h = Harness([linear_saga(calls)])
    plan = FaultPlan.parse("linear.a:crash@1")
    h.engine = Engine(
        registry=h.registry,
        store=h.store,
        queue=h.queue,
        io_manager=MemoryIOManager(),
        clock=h.clock,
        executor=FaultInjectingExecutor(StepExecutor(), plan, crash=crash),
        settings=h.settings,
    )
    started = h.engine.runs.start("linear", {})
    item = h.queue.lease_due(now=h.clock.now(), limit=1, lease_seconds=5)[0]
    with pytest.raises(Crashed):
        h.engine.handle(item.message)
    assert crashes == ["crash"] and calls["a"] == 1
    assert h.engine.runs.get(started.run.run_id).step("a").status.value == "RUNNING"
    h.close()


def test_crash_process_exits_with_the_kill_exit_code() -> None:
    """The default crash ends a process at once with exit code 137, as a kill would."""
    code = "from core.faults import crash_process; crash_process()"
    finished = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert finished.returncode == CRASH_EXIT_CODE == 137


def test_engines_run_without_the_fault_wrapper_unless_relay_faults_is_set() -> None:
    """The composition root wraps the executor only when RELAY_FAULTS has rules."""
    plain = build_executor(Settings(faults=""))
    wrapped = build_executor(Settings(faults="order.charge:fail@0.5;seed=2"))
    assert isinstance(plain, StepExecutor)
    assert isinstance(wrapped, FaultInjectingExecutor)
    assert wrapped.plan.rules[0].step == "charge"
    assert "faults: order.charge/execute:fail@0.5; seed=2" in wrapped.describe()


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


def test_saga_qualified_rules_match_only_their_saga() -> None:
    """Messages name their saga, so a rule for one saga never fires for another's step."""
    plan = FaultPlan.parse("order.charge:duplicate@1")
    assert plan.should(FaultKind.DUPLICATE, saga="order", step="charge", action="execute")
    assert not plan.should(FaultKind.DUPLICATE, saga="other", step="charge", action="execute")
