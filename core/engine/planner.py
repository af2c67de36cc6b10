"""Pure decisions of the step protocol: what is ready, what to check, what to undo next.

Nothing here does I/O; the runner feeds it snapshots and applies what it returns, which
keeps every branch unit-testable with plain records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.domain.records import (
    Message,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
    VersionCheck,
)
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus, StepStatus

Steps = Mapping[StepName, StepRecord]


def deps_of(saga: Saga, steps: Steps, name: str) -> tuple[str, ...]:
    """Dependencies of ``name`` that this run actually has (definitions may have grown)."""
    definition = saga.steps.get(name)
    if definition is None:
        return ()
    return tuple(d for d in definition.after if StepName(d) in steps)


def ordered_names(saga: Saga, steps: Steps) -> list[StepName]:
    """The run's steps in execution order: by the current definition, unknown ones last."""
    index = {name: d.index for name, d in saga.steps.items()}
    return sorted(steps, key=lambda n: (index.get(n, len(index)), n))


def is_done(saga: Saga, record: StepRecord) -> bool:
    """True when the steps after this one may run: it SUCCEEDED, or a fail-safe step FAILED.

    A ``fail_safe`` step (a pipeline task declared ``fail_safe=True``) that failed for good
    lets the run go on without its output; every other step must succeed.
    """
    if record.status is StepStatus.SUCCEEDED:
        return True
    if record.status is not StepStatus.FAILED:
        return False
    definition = saga.steps.get(record.name)
    return definition is not None and definition.fail_safe


def deps_done(saga: Saga, steps: Steps, name: str) -> bool:
    """True when every dependency of ``name`` in this run is done (``is_done``)."""
    return all(is_done(saga, steps[StepName(d)]) for d in deps_of(saga, steps, name))


def is_ready(saga: Saga, steps: Steps, name: StepName) -> bool:
    """True when a never-attempted step has all dependencies done."""
    record = steps[name]
    return (
        record.status is StepStatus.PENDING and record.attempt == 0 and deps_done(saga, steps, name)
    )


def successors_in_run(saga: Saga, steps: Steps, name: str) -> list[StepName]:
    """Steps of this run that depend on ``name``."""
    return [StepName(s) for s in saga.successors.get(name, ()) if StepName(s) in steps]


def success_follow_up(
    saga: Saga, steps: Steps, name: StepName
) -> tuple[list[StepName], list[VersionCheck], bool]:
    """After ``name`` is done (already reflected in ``steps``): what becomes ready.

    Returns the ready successors, the version checks that make the decision safe, and
    whether the run is now complete.

    Two parallel steps that commit together each read the other as unfinished; without
    a check neither would start their common successor (or complete the run). Checking
    the version of every unfinished step the decision depends on makes one of the two
    commits conflict, re-read, and see the other finished::

        A1 reads A2=RUNNING ─ commits (check A2@v) ─────────────── ok
        A2 reads A1=RUNNING ─────────────── commits (check A1@v) ─ conflict → re-read →
                                                      A1=SUCCEEDED → start B
    """
    ready: list[StepName] = []
    checks: dict[StepName, VersionCheck] = {}
    successors = successors_in_run(saga, steps, name)
    for successor in successors:
        if is_ready(saga, steps, successor):
            ready.append(successor)
        for dep in deps_of(saga, steps, successor):
            record = steps[StepName(dep)]
            if dep != name and not is_done(saga, record):
                checks[record.name] = VersionCheck(record.name, record.version)
    is_complete = all(is_done(saga, r) for r in steps.values())
    if not successors:
        for record in steps.values():
            if record.name != name and not is_done(saga, record):
                checks[record.name] = VersionCheck(record.name, record.version)
    return ready, list(checks.values()), is_complete


def is_waiting(saga: Saga, record: StepRecord) -> bool:
    """True when the step is parked by a sleep or an event wait (RUNNING, no worker)."""
    definition = saga.steps.get(record.name)
    return (
        record.status is StepStatus.RUNNING
        and definition is not None
        and definition.wait is not None
    )


def active_status(saga: Saga, steps: Steps, *, starting: Iterable[StepName]) -> RunStatus:
    """RUNNING while any step runs or is about to; WAITING when only parked steps remain."""
    if any(True for _ in starting):
        return RunStatus.RUNNING
    for record in steps.values():
        if record.status is StepStatus.RUNNING and not is_waiting(saga, record):
            return RunStatus.RUNNING
        if record.status is StepStatus.PENDING and record.attempt > 0:
            return RunStatus.RUNNING  # a retry is due
    if any(is_waiting(saga, record) for record in steps.values()):
        return RunStatus.WAITING
    return RunStatus.RUNNING


def needs_compensation(saga: Saga, record: StepRecord) -> bool:
    """True when the step did (or may have done) something its compensation must undo."""
    definition = saga.steps.get(record.name)
    if definition is None or definition.compensation is None:
        return False
    if record.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING):
        return True
    if record.status is StepStatus.FAILED:
        return definition.compensate_on_failure
    return False


def next_compensation_target(saga: Saga, steps: Steps) -> StepName | None:
    """The step the compensation walk must deal with next, in reverse order.

    A step still RUNNING (a parallel branch in flight) is a target too: its outcome must be
    known before anything declared earlier is undone. None means nothing is left.
    """
    for name in reversed(ordered_names(saga, steps)):
        record = steps[name]
        definition = saga.steps.get(name)
        has_compensation = definition is not None and definition.compensation is not None
        if (record.status is StepStatus.RUNNING and has_compensation) or needs_compensation(
            saga, record
        ):
            return name
    return None


def compensation_message(saga: Saga, steps: Steps, target: StepName) -> Message:
    """The message that drives compensation of ``target`` (delayed by a pending retry)."""
    record = steps[target]
    not_before = record.retry_at if record.status is StepStatus.COMPENSATING else None
    return Message(
        record.run_id, target, Action.COMPENSATE, record.attempt + 1, not_before, saga=saga.name
    )


def finish_compensation(run: RunRecord, *, now: float) -> StateChange:
    """The write that ends a compensation with nothing left to undo."""
    return StateChange(run.run_id, run=run.compensation_finished(now=now))


def begin_compensation(
    saga: Saga,
    run: RunRecord,
    steps: Steps,
    *,
    now: float,
    error: str,
    is_cancel: bool = False,
    error_detail: str | None = None,
) -> tuple[RunRecord, list[StepRecord], list[Message]]:
    """The write that turns a run to COMPENSATING (or straight to its end state).

    Steps never attempted become SKIPPED; steps waiting for a retry become FAILED (they may
    have had effects). The same write carries the first compensation message, so entering
    compensation and starting it cannot be separated by a crash. ``error`` is the public
    reason, ``error_detail`` the full (redacted) one.
    """
    changed: dict[StepName, StepRecord] = {}
    for name, record in steps.items():
        if is_waiting(saga, record):
            # A sleep or event wait has no effect to undo; it just stops waiting.
            changed[name] = record.stopped_waiting(now=now)
        elif record.status is StepStatus.PENDING:
            if record.attempt == 0:
                changed[name] = record.skipped(now=now)
            else:
                changed[name] = record.failed(
                    now=now, error=record.error, error_detail=record.error_detail
                )
    view = {**steps, **changed}
    target = next_compensation_target(saga, view)
    if target is None:
        closed = run.closed_without_compensation(
            now=now, reason=error, is_cancel=is_cancel, reason_detail=error_detail
        )
        return closed, list(changed.values()), []
    new_run = run.compensating(
        now=now, reason=error, is_cancel=is_cancel, reason_detail=error_detail
    )
    return new_run, list(changed.values()), [compensation_message(saga, view, target)]


def expected_messages(saga: Saga, snapshot: RunSnapshot, *, now: float) -> list[Message]:
    """Every message that should exist for the run's current state (re-drive, sweeper).

    Enqueue is idempotent, so emitting a message that already exists costs one no-op.
    """
    run, steps = snapshot.run, snapshot.steps
    if run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING):
        messages: list[Message] = []
        for name in ordered_names(saga, steps):
            record = steps[name]
            if record.status is StepStatus.PENDING and deps_done(saga, steps, name):
                messages.append(execute_message(saga, record, not_before=record.retry_at))
            elif is_waiting(saga, record):
                messages.append(wake_message(saga, record))
            elif record.status is StepStatus.RUNNING and not record.has_live_lease(now):
                messages.append(execute_message(saga, record))
        return messages
    if run.status is RunStatus.COMPENSATING:
        target = next_compensation_target(saga, steps)
        if target is not None:
            return [compensation_message(saga, steps, target)]
    return []


def wake_message(saga: Saga, record: StepRecord) -> Message:
    """The delayed message that ends a parked step's wait (RESUME a sleep, TIMEOUT a wait)."""
    wait = saga.steps[record.name].wait
    assert wait is not None
    action = Action.RESUME if wait.is_sleep else Action.TIMEOUT
    return Message(
        record.run_id, record.name, action, record.attempt, record.lease_until, saga=saga.name
    )


def execute_message(saga: Saga, record: StepRecord, *, not_before: float | None = None) -> Message:
    """The message for the step's next execute attempt (delayed to ``not_before``)."""
    return Message(
        record.run_id, record.name, Action.EXECUTE, record.attempt + 1, not_before, saga=saga.name
    )


def unknown_steps(saga: Saga, steps: Iterable[StepName]) -> list[str]:
    """Steps a run has that the current definition lacks (definition drift)."""
    return [name for name in steps if name not in saga.steps]
