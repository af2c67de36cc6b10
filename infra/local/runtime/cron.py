"""The local stand-in for Cloud Scheduler / EventBridge Scheduler: fires cron schedules.

``relay dev`` runs :func:`run_cron_loop` beside the dispatcher. Each tick it fires every
scheduled time that fell since the previous tick through ``TriggerService.fire_schedule``,
whose run ids derive from the schedule and the time, so a tick that is repeated (two
stacks on one data dir, a restart within the same minute) never starts a second run. Like
the cloud schedulers, times missed while the stack was down are not back-filled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.domain.saga import Saga
from core.domain.triggers import Schedule
from core.engine.engine import Engine
from core.errors import EngineError
from core.scheduling import fire_times_between, iso_utc

log = logging.getLogger("relay.cron")


@dataclass(frozen=True, slots=True)
class Firing:
    """One scheduled time of one schedule."""

    schedule: str
    saga: str
    scheduled_at: float


def due_firings(
    schedules: list[tuple[Saga, Schedule]], *, after: float, until: float
) -> list[Firing]:
    """Every scheduled time in ``(after, until]``, oldest first."""
    firings = [
        Firing(item.name, saga.name, moment)
        for saga, item in schedules
        for moment in fire_times_between(item.cron, item.timezone, after=after, until=until)
    ]
    return sorted(firings, key=lambda f: (f.scheduled_at, f.schedule))


def fire_due(engine: Engine, *, after: float, until: float) -> list[Firing]:
    """Start the runs of every firing in ``(after, until]``; returns those fired.

    A firing whose start fails (bad input declared in code, an unavailable store) is
    logged and skipped; the next tick does not retry it, as Cloud Scheduler would not
    without a retry policy, but the run id stays the same if it is fired by hand later.
    """
    fired: list[Firing] = []
    for firing in due_firings(engine.triggers.schedules(), after=after, until=until):
        try:
            result = engine.triggers.fire_schedule(
                name=firing.schedule, scheduled_at=firing.scheduled_at
            )
        except EngineError as exc:
            log.error(
                "schedule %s at %s could not start a run: %s",
                firing.schedule,
                iso_utc(firing.scheduled_at),
                exc,
            )
            continue
        fired.append(firing)
        log.info(
            "schedule %s fired for %s",
            firing.schedule,
            iso_utc(firing.scheduled_at),
            extra={
                "run_id": result.run.run_id,
                "saga": firing.saga,
                "is_new_run": result.is_created,
            },
        )
    return fired


async def run_cron_loop(
    engine: Engine,
    *,
    tick_seconds: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Fire schedules until cancelled (a ``DevStack`` background task)."""
    if not await asyncio.to_thread(engine.triggers.schedules):
        return  # nothing to schedule in this bundle: no loop at all
    last = clock()
    while True:
        await asyncio.sleep(tick_seconds)
        now = clock()
        await asyncio.to_thread(fire_due, engine, after=last, until=now)
        last = now
