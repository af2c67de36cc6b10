"""The chaos campaigns' stall reports cannot hang: every call is bounded, and so is the whole."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.stall import Budget, DiagnosticTimeout, within


def test_a_call_that_never_answers_is_abandoned_at_its_bound() -> None:
    """``within`` returns control after the bound even if the call blocks for good."""
    never = threading.Event()
    began = time.monotonic()

    with pytest.raises(DiagnosticTimeout, match="query: no answer within"):
        within(0.2, lambda: never.wait(60), what="query")

    assert time.monotonic() - began < 5
    never.set()


def test_a_call_that_answers_or_fails_is_passed_through() -> None:
    """Results come back, and a call's own error is raised in the caller's thread."""
    assert within(5, lambda: 42) == 42
    with pytest.raises(KeyError):
        within(5, lambda: {}["missing"])


def test_a_report_budget_notes_what_it_could_not_read_and_stops_when_spent() -> None:
    """Hanging and failing calls become notes; once the total is spent, calls are skipped."""
    never = threading.Event()
    budget = Budget(total_seconds=1.0, per_call_seconds=0.3)
    began = time.monotonic()

    answers = [
        budget.call("fine", lambda: "ok"),
        budget.call("broken", lambda: 1 / 0),
        *(budget.call(f"hang {n}", lambda: never.wait(60)) for n in range(10)),
    ]

    assert time.monotonic() - began < 3
    assert answers[0] == "ok" and answers[1:] == [None] * 11
    assert budget.is_spent
    assert any("ZeroDivisionError" in note for note in budget.notes)
    assert any("no answer within" in note for note in budget.notes)
    assert any("skipped" in note for note in budget.notes)
    never.set()
