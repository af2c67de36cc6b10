"""The sweeper: re-drives runs whose messages are missing or overdue, and never storms.

Delivery is at least once and the step protocol heals most losses by itself (a
redelivered message re-drives its run). What it cannot heal is a message gone for good: a
queue purged by hand, a message moved to the dead-letter queue after its worker crashed
``maxReceiveCount`` times, an enqueue lost between a cloud store's commit and the queue
call. The sweeper, run on a schedule (every minute in a deployment), is the backstop.

It must not add work in proportion to how slow the queue is. A standard SQS queue does
not drop a duplicate send, so each message sent for a run whose message is merely slow is
one more delivery for an already busy queue; a sweeper that re-sent the messages of every
run that had not moved for a while made a slow queue slower the slower it got (issue 9:
the AWS chaos campaign ended with ~1,200 messages queued for 80 unfinished runs). So:

* A run is re-driven only when a message it needs is **overdue**: the run's state says when
  that message became due, and ``stale_after_seconds`` passed since without the run moving.
  Only the overdue messages are sent::

      state of the step (or run)              message that must exist       due since
      PENDING, predecessors all SUCCEEDED     EXECUTE attempt+1             the latest of: run
                                                                            created, step changed,
                                                                            predecessors finished,
                                                                            its retry time
      RUNNING, lease ran out (worker died)    EXECUTE attempt+1             lease_until
      RUNNING, parked (sleep, event wait)     RESUME / TIMEOUT (wake-up)    lease_until (deadline)
      RUNNING, lease live                     none: a worker holds it       -
      COMPENSATING, next step to undo         COMPENSATE attempt+1          the run's last change,
                                                                            its retry, its lease
      COMPENSATING, nothing left to undo      COMPENSATE (closes the run)   the run's last change

* The re-drive is one conditional write: the run header, with the re-drive recorded in
  it, written over the version the sweeper read, plus a version check of every step it
  sends a message for, carrying the messages as its outbox. If a worker moved the run
  meanwhile, the write conflicts and nothing is sent.
* **Back-off per run**, persisted in the header (``redrive_count``, ``redriven_at``), so it
  holds whichever container runs the next sweep: after the n-th re-drive the next waits
  ``stale_after_seconds * 2**n``, at most ``max_backoff_seconds``::

      overdue ──stale──▶ re-drive 1 ──2·stale──▶ re-drive 2 ──4·stale──▶ re-drive 3 ─ … ─▶ cap

  A run whose message is merely slow gets a few extra messages over its whole life, not
  one per sweep.
* **Bounded work per sweep**: at most ``scan_limit`` headers listed, ``max_loads`` runs
  loaded (chosen at random among the candidates, so no run is starved by others), and
  ``max_messages`` messages sent, whatever the load.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from core.domain.records import (
    Message,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    VersionCheck,
)
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus, StepStatus
from core.engine import planner
from core.errors import ConcurrencyConflict, ConfigurationError, UnknownSagaError
from core.ports.clock import Clock
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry

log = logging.getLogger("relay.sweeper")

DEFAULT_SWEEP_STALE_SECONDS: Final = 120.0
"""How long a message may be overdue before the sweeper sends it again."""

ACTIVE_STATUSES: Final = (
    RunStatus.PENDING,
    RunStatus.RUNNING,
    RunStatus.WAITING,
    RunStatus.COMPENSATING,
)


@dataclass(frozen=True, slots=True)
class SweepSettings:
    """Limits of the sweeper.

    ``stale_after_seconds`` is the default grace (a sweep call may pass its own): set it
    well above the queue's normal delivery latency. ``max_backoff_seconds`` caps the wait
    between two re-drives of one run. ``scan_limit``, ``max_loads`` and ``max_messages``
    bound one sweep's reads and sends.
    """

    stale_after_seconds: float = DEFAULT_SWEEP_STALE_SECONDS
    max_backoff_seconds: float = 3600.0
    scan_limit: int = 1000
    max_loads: int = 100
    max_messages: int = 100


@dataclass(frozen=True, slots=True)
class DueMessage:
    """A message the run's state needs, and since when it should have been delivered."""

    message: Message
    due_at: float


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did; every count is bounded by ``SweepSettings``.

    ``listed``: active run headers read. ``backing_off``: runs skipped because their last
    re-drive is too recent. ``loaded``: runs read in full. ``redriven``: runs whose overdue
    messages were sent (``messages`` in all). ``raced``: re-drives dropped because a worker
    moved the run meanwhile. ``is_truncated``: a limit stopped the sweep early.
    """

    stale_after_seconds: float
    listed: int = 0
    backing_off: int = 0
    loaded: int = 0
    redriven: int = 0
    messages: int = 0
    raced: int = 0
    is_truncated: bool = False

    def to_json(self) -> dict[str, object]:
        """The report as the sweep endpoints answer it."""
        return {
            "redriven": self.redriven,
            "stale_after_seconds": self.stale_after_seconds,
            "messages": self.messages,
            "listed": self.listed,
            "loaded": self.loaded,
            "backing_off": self.backing_off,
            "raced": self.raced,
            "is_truncated": self.is_truncated,
        }


def due_messages(saga: Saga, snapshot: RunSnapshot, *, now: float) -> list[DueMessage]:
    """Every message the run's state needs now, with the time it became due (table above).

    A step a worker holds (live lease) needs none; neither does a finished run.
    """
    run, steps = snapshot.run, snapshot.steps
    if run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING):
        due: list[DueMessage] = []
        for name in planner.ordered_names(saga, steps):
            record = steps[name]
            if planner.is_waiting(saga, record):
                wake = planner.wake_message(saga, record)
                due.append(DueMessage(wake, record.lease_until or record.updated_at))
            elif record.status is StepStatus.RUNNING:
                if not record.has_live_lease(now):
                    message = Message(
                        run.run_id, name, Action.EXECUTE, record.attempt + 1, saga=saga.name
                    )
                    due.append(DueMessage(message, record.lease_until or record.updated_at))
            elif record.status is StepStatus.PENDING:
                deps = [steps[StepName(d)] for d in planner.deps_of(saga, steps, name)]
                if all(planner.is_done(saga, d) for d in deps):
                    ready_at = max(
                        [run.created_at, record.updated_at, record.retry_at or 0.0]
                        + [d.finished_at or d.updated_at for d in deps]
                    )
                    message = Message(
                        run.run_id,
                        name,
                        Action.EXECUTE,
                        record.attempt + 1,
                        record.retry_at,
                        saga=saga.name,
                    )
                    due.append(DueMessage(message, ready_at))
        return due
    if run.status is RunStatus.COMPENSATING and steps:
        last_change = max([run.updated_at, *(r.updated_at for r in steps.values())])
        target = planner.next_compensation_target(saga, steps)
        if target is None:
            # Nothing left to undo but the run was not closed: any compensate message
            # lets a worker close it.
            last = planner.ordered_names(saga, steps)[-1]
            message = Message(
                run.run_id, last, Action.COMPENSATE, steps[last].attempt + 1, saga=saga.name
            )
            return [DueMessage(message, last_change)]
        record = steps[target]
        if record.has_live_lease(now):
            return []
        due_at = max(last_change, record.lease_until or 0.0)
        if record.status is StepStatus.COMPENSATING:
            due_at = max(due_at, record.retry_at or 0.0)
        return [DueMessage(planner.compensation_message(saga, steps, target), due_at)]
    return []


def backoff_seconds(redrive_count: int, *, stale_after_seconds: float, cap_seconds: float) -> float:
    """How long after its ``redrive_count``-th re-drive a run waits before the next one."""
    if redrive_count <= 0:
        return 0.0
    return min(stale_after_seconds * 2.0 ** min(redrive_count, 32), cap_seconds)


def next_redrive_at(run: RunRecord, *, stale_after_seconds: float, cap_seconds: float) -> float:
    """The earliest time the sweeper may re-drive ``run`` again (its back-off)."""
    if run.redriven_at is None:
        return run.created_at
    wait = backoff_seconds(
        run.redrive_count, stale_after_seconds=stale_after_seconds, cap_seconds=cap_seconds
    )
    return run.redriven_at + wait


class Sweeper:
    """Finds runs with overdue messages and re-sends those messages, with back-off.

    Stateless between calls: everything it needs to remember is in the run headers, so
    any container may run the next sweep.
    """

    def __init__(
        self,
        *,
        registry: SagaRegistry,
        store: StateStore,
        queue: TaskQueue,
        clock: Clock,
        settings: SweepSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._queue = queue
        self._clock = clock
        self._settings = settings or SweepSettings()
        self._rng = rng or random.Random()

    @property
    def settings(self) -> SweepSettings:
        """The limits this sweeper works within."""
        return self._settings

    def sweep(self, *, stale_after_seconds: float | None = None) -> SweepReport:
        """Re-drive the runs whose messages are overdue by ``stale_after_seconds``.

        Args:
            stale_after_seconds: The grace past a message's due time (None: the
                settings' default). Must not be negative.

        Returns:
            What the sweep read, skipped and sent.

        Raises:
            ValueError: ``stale_after_seconds`` is negative.
            StoreUnavailable, QueueUnavailable: the backend failed; runs re-driven before
                the failure stay re-driven, the rest wait for the next sweep.
        """
        settings = self._settings
        stale = settings.stale_after_seconds if stale_after_seconds is None else stale_after_seconds
        if stale < 0:
            raise ValueError("stale_after_seconds must not be negative")
        now = self._clock.now()
        headers = self._store.list_runs(statuses=ACTIVE_STATUSES, limit=settings.scan_limit)
        candidates: list[RunRecord] = []
        backing_off = 0
        for header in headers:
            if header.saga not in self._registry or now < header.created_at + stale:
                continue  # another worker's saga, or too young for anything to be overdue
            if now < next_redrive_at(
                header, stale_after_seconds=stale, cap_seconds=settings.max_backoff_seconds
            ):
                backing_off += 1
                continue
            candidates.append(header)
        self._rng.shuffle(candidates)
        loaded = redriven = sent = raced = 0
        is_truncated = len(headers) >= settings.scan_limit
        for header in candidates:
            if loaded >= settings.max_loads:
                is_truncated = True
                break
            loaded += 1
            messages = self._overdue(header, now=now, stale=stale)
            if messages is None or not messages[1]:
                continue
            snapshot, overdue = messages
            if sent + len(overdue) > settings.max_messages:
                is_truncated = True
                break
            if not self._redrive(snapshot, overdue, now=now):
                raced += 1
                continue
            redriven += 1
            sent += len(overdue)
        report = SweepReport(
            stale_after_seconds=stale,
            listed=len(headers),
            backing_off=backing_off,
            loaded=loaded,
            redriven=redriven,
            messages=sent,
            raced=raced,
            is_truncated=is_truncated,
        )
        if redriven or raced or is_truncated:
            log.info("sweep: %s", report.to_json(), extra={"sweep": report.to_json()})
        return report

    def _overdue(
        self, header: RunRecord, *, now: float, stale: float
    ) -> tuple[RunSnapshot, list[Message]] | None:
        """The run as stored and its messages overdue by more than ``stale``."""
        snapshot = self._store.load_run(run_id=header.run_id)
        if snapshot is None or snapshot.run.status not in ACTIVE_STATUSES:
            return None
        try:
            saga = self._registry.get(snapshot.run.saga)
        except (UnknownSagaError, ConfigurationError):
            return None  # a saga this process cannot load: the worker that serves it fails it
        due = due_messages(saga, snapshot, now=now)
        return snapshot, [d.message for d in due if now >= d.due_at + stale]

    def _redrive(self, snapshot: RunSnapshot, messages: Sequence[Message], *, now: float) -> bool:
        """Record the re-drive and send ``messages`` in one conditional write; False on a race."""
        run = snapshot.run
        checked = dict.fromkeys(m.step for m in messages)
        change = StateChange(
            run.run_id,
            run=run.redriven(now=now),
            checks=tuple(VersionCheck(name, snapshot.steps[name].version) for name in checked),
            outbox=tuple(messages),
        )
        try:
            self._store.apply(change=change)
        except ConcurrencyConflict:
            return False  # a worker moved the run since it was read: it is not stuck
        if not self._store.delivers_outbox:
            self._queue.enqueue(messages=change.outbox)
        log.warning(
            "sweeper re-sent the overdue messages of a stalled run",
            extra={
                "run_id": run.run_id,
                "messages": [m.message_id for m in messages],
                "redrive_count": run.redrive_count + 1,
            },
        )
        return True
