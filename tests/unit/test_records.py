"""Run and step record transitions: what each one writes and where each one is allowed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.domain.records import RunId, RunRecord, StepName, StepRecord
from core.domain.status import RUN_TRANSITIONS, STEP_TRANSITIONS, RunStatus, StepStatus
from core.errors import IllegalTransitionError

T0 = 1_700_000_000.0
NOW = T0 + 10

STEP_CALLS: dict[str, Callable[[StepRecord], StepRecord]] = {
    "claimed": lambda r: r.claimed(now=NOW, lease_until=NOW + 30, error=None),
    "parked": lambda r: r.parked(now=NOW, until=NOW + 60),
    "event_taken": lambda r: r.event_taken(now=NOW, output={"e": 1}),
    "succeeded": lambda r: r.succeeded(now=NOW, output=1),
    "retry_scheduled": lambda r: r.retry_scheduled(now=NOW, retry_at=NOW + 2, error="x"),
    "failed": lambda r: r.failed(now=NOW, error="x"),
    "skipped": lambda r: r.skipped(now=NOW),
    "stopped_waiting": lambda r: r.stopped_waiting(now=NOW),
    "event_buffered": lambda r: r.event_buffered(now=NOW, output={"$event": 1}),
    "compensation_claimed": lambda r: r.compensation_claimed(now=NOW, lease_until=NOW + 30),
    "compensated": lambda r: r.compensated(now=NOW),
    "compensation_retry_scheduled": lambda r: r.compensation_retry_scheduled(
        now=NOW, retry_at=NOW + 2, error="x"
    ),
    "compensation_failed": lambda r: r.compensation_failed(now=NOW, error="x"),
    "budget_reset": lambda r: r.budget_reset(now=NOW),
}

RUN_CALLS: dict[str, Callable[[RunRecord], RunRecord]] = {
    "running": lambda r: r.running(now=NOW),
    "waiting": lambda r: r.waiting(now=NOW),
    "completed": lambda r: r.completed(now=NOW, output={"ok": True}),
    "compensating": lambda r: r.compensating(now=NOW, reason="why", is_cancel=False),
    "closed_without_compensation": lambda r: r.closed_without_compensation(
        now=NOW, reason="why", is_cancel=False
    ),
    "compensation_finished": lambda r: r.compensation_finished(now=NOW),
    "cancel_requested": lambda r: r.cancel_requested(now=NOW),
    "failed": lambda r: r.failed(now=NOW, error="stuck"),
    "retried": lambda r: r.retried(now=NOW, definition_hash="h2", is_compensating=False),
    "redriven": lambda r: r.redriven(now=NOW),
}
NOT_PROGRESS = frozenset({"redriven"})
"""Transitions that are bookkeeping, not progress of the run: they keep ``updated_at``."""


def step(
    status: StepStatus = StepStatus.PENDING,
    *,
    attempt: int = 0,
    budget_start: int = 0,
    compensation_attempts: int = 0,
) -> StepRecord:
    return StepRecord(
        RunId("r-1"),
        StepName("charge"),
        status=status,
        attempt=attempt,
        budget_start=budget_start,
        compensation_attempts=compensation_attempts,
        updated_at=T0,
    )


def run(status: RunStatus = RunStatus.RUNNING) -> RunRecord:
    return RunRecord(RunId("r-1"), "order", status, {}, "h1", T0, T0)


def test_the_tables_name_exactly_the_transitions_the_records_have() -> None:
    """Every transition has a legality entry and every entry a transition (no drift)."""
    assert set(STEP_CALLS) == set(STEP_TRANSITIONS)
    assert set(RUN_CALLS) == set(RUN_TRANSITIONS)
    for name in STEP_TRANSITIONS:
        assert callable(getattr(StepRecord, name))
    for name in RUN_TRANSITIONS:
        assert callable(getattr(RunRecord, name))


@pytest.mark.parametrize(
    ("transition", "status"),
    [(t, s) for t, allowed in STEP_TRANSITIONS.items() for s in StepStatus],
)
def test_step_transitions_are_allowed_exactly_from_their_statuses(
    transition: str, status: StepStatus
) -> None:
    """An allowed transition bumps version and updated_at; any other raises, naming both."""
    before = step(status)
    call = STEP_CALLS[transition]
    if status in STEP_TRANSITIONS[transition]:
        after = call(before)
        assert (after.version, after.updated_at) == (before.version + 1, NOW)
        assert (after.run_id, after.name) == (before.run_id, before.name)
        return
    with pytest.raises(IllegalTransitionError) as info:
        call(before)
    message = str(info.value)
    assert f"{transition!r}" in message and status.value in message and "charge" in message


@pytest.mark.parametrize(
    ("transition", "status"),
    [(t, s) for t, allowed in RUN_TRANSITIONS.items() for s in RunStatus],
)
def test_run_transitions_are_allowed_exactly_from_their_statuses(
    transition: str, status: RunStatus
) -> None:
    """An allowed transition bumps version and updated_at; any other raises, naming both."""
    before = run(status)
    call = RUN_CALLS[transition]
    if status in RUN_TRANSITIONS[transition]:
        after = call(before)
        updated_at = before.updated_at if transition in NOT_PROGRESS else NOW
        assert (after.version, after.updated_at) == (before.version + 1, updated_at)
        return
    with pytest.raises(IllegalTransitionError, match=f"'{transition}' is not allowed from"):
        call(before)


def test_no_transition_leaves_a_terminal_run_except_a_retry_of_a_failed_one() -> None:
    """COMPLETED, COMPENSATED and CANCELLED are final; FAILED only leaves by retried."""
    for name, allowed in RUN_TRANSITIONS.items():
        terminal = {s for s in allowed if s.is_terminal}
        assert terminal == ({RunStatus.FAILED} if name == "retried" else set()), name


def test_claims_count_attempts_and_keep_the_first_start() -> None:
    """A claim adds an attempt with a lease; a re-claim after a lost lease keeps started_at."""
    first = step().claimed(now=NOW, lease_until=NOW + 30, error=None)
    again = first.claimed(now=NOW + 40, lease_until=NOW + 70, error="attempt 1 lost its lease")
    assert (first.status, first.attempt, first.lease_until) == (StepStatus.RUNNING, 1, NOW + 30)
    assert (again.attempt, again.started_at, again.error) == (2, NOW, "attempt 1 lost its lease")
    assert again.execute_attempts == 2 and again.compensation_attempts == 0


def test_a_retry_clears_the_lease_and_keeps_the_error() -> None:
    """A scheduled retry goes back to PENDING, with no lease, due at retry_at."""
    pending = step(StepStatus.RUNNING, attempt=1).retry_scheduled(
        now=NOW, retry_at=NOW + 5, error="TimeoutError"
    )
    assert (pending.status, pending.lease_until, pending.retry_at) == (
        StepStatus.PENDING,
        None,
        NOW + 5,
    )
    assert pending.error == "TimeoutError"


def test_compensation_attempts_are_counted_apart_from_the_step_attempts() -> None:
    """The first compensation claim starts its budget; its attempts never count as the step's."""
    done = step(StepStatus.RUNNING, attempt=2).succeeded(now=NOW, output=1)
    first = done.compensation_claimed(now=NOW, lease_until=NOW + 30)
    retry = first.compensation_retry_scheduled(now=NOW, retry_at=NOW + 1, error="refund down")
    second = retry.compensation_claimed(now=NOW + 1, lease_until=NOW + 31)
    assert (first.budget_start, first.attempt) == (2, 3)
    assert (second.budget_start, second.attempt) == (2, 4)
    assert (second.execute_attempts, second.compensation_attempts) == (2, 2)
    assert second.compensation_attempts_in_budget == 2
    assert done.compensation_attempts_in_budget == 0
    assert second.compensated(now=NOW + 2).status is StepStatus.COMPENSATED


def test_a_budget_reset_starts_a_fresh_budget_and_keeps_the_counts() -> None:
    """A manual retry's reset moves budget_start to the current attempt, counts unchanged."""
    stuck = step(StepStatus.COMPENSATING, attempt=5, budget_start=3, compensation_attempts=2)
    reset = stuck.budget_reset(now=NOW)
    assert (reset.budget_start, reset.attempts_in_budget) == (5, 0)
    assert (reset.execute_attempts, reset.compensation_attempts) == (3, 2)


def test_a_retried_run_that_ends_compensated_shows_why_it_compensated() -> None:
    """The retry instruction of a failed compensation is gone once the retry worked."""
    compensating = run().compensating(now=NOW, reason="step 'charge' failed", is_cancel=False)
    failed = compensating.failed(now=NOW, error="compensation failed; run `relay runs retry`")
    retried = failed.retried(now=NOW + 1, definition_hash="h2", is_compensating=True)
    finished = retried.compensation_finished(now=NOW + 2)
    assert failed.compensation_reason == "step 'charge' failed"
    assert (retried.status, retried.error) == (RunStatus.COMPENSATING, "step 'charge' failed")
    assert retried.definition_hash == "h2"
    assert (finished.status, finished.error) == (RunStatus.COMPENSATED, "step 'charge' failed")


def test_a_retried_run_that_failed_before_compensating_runs_again_without_error() -> None:
    """A run failed by drift resumes RUNNING, its error cleared."""
    failed = run().failed(now=NOW, error="saga changed; deploy and retry")
    retried = failed.retried(now=NOW + 1, definition_hash="h2", is_compensating=False)
    assert (retried.status, retried.error, retried.compensation_reason) == (
        RunStatus.RUNNING,
        None,
        None,
    )


def test_a_cancel_ends_cancelled_and_records_the_request_as_the_reason() -> None:
    """Cancelling compensates with the cancel as the reason and ends CANCELLED."""
    cancelling = run().compensating(now=NOW, reason="cancelled by request", is_cancel=True)
    assert cancelling.is_cancel_requested
    assert cancelling.compensation_finished(now=NOW).status is RunStatus.CANCELLED
    closed = run().closed_without_compensation(now=NOW, reason="nothing done", is_cancel=False)
    assert (closed.status, closed.error) == (RunStatus.COMPENSATED, "nothing done")
    late = run().compensating(now=NOW, reason="boom", is_cancel=False).cancel_requested(now=NOW)
    assert (late.compensation_finished(now=NOW).status, late.error) == (
        RunStatus.CANCELLED,
        "boom",
    )
