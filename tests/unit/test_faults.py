"""RELAY_FAULTS parsing and the decisions it drives."""

from __future__ import annotations

import pytest

from core import ConfigurationError
from core.faults import FaultKind, FaultPlan


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
