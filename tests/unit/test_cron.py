"""The local cron loop: which times fire, idempotently, and the loop itself."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core import RunStatus, Saga, StepContext
from infra.local.runtime.cron import due_firings, fire_due, run_cron_loop
from infra.memory.harness import memory_harness

HOUR_START = 1_700_000_400.0  # 2023-11-14T22:20:00Z, a multiple of five minutes


def reporting_saga() -> Saga:
    saga = Saga("report")

    @saga.step
    def build(ctx: StepContext) -> str:
        return f"report for {ctx.input['scope']}"

    saga.schedule("every-five-minutes", "*/5 * * * *", input={"scope": "all"})
    return saga


def test_due_firings_lists_each_scheduled_time_in_the_window_once() -> None:
    """A five-minute schedule fires twelve times in an hour, at the exact times."""
    saga = reporting_saga()
    firings = due_firings([(saga, saga.schedules[0])], after=HOUR_START, until=HOUR_START + 3600)
    assert len(firings) == 12
    assert firings[0].scheduled_at == HOUR_START + 300
    assert firings[-1].scheduled_at == HOUR_START + 3600


def test_firing_the_same_window_twice_starts_each_run_once() -> None:
    """Overlapping ticks (a restart, a second stack) find the runs already started."""
    h = memory_harness([reporting_saga()])
    first = fire_due(h.engine, after=HOUR_START, until=HOUR_START + 900)
    again = fire_due(h.engine, after=HOUR_START, until=HOUR_START + 900)
    assert len(first) == len(again) == 3
    h.pump()
    runs = h.engine.runs.list(saga="report")
    assert len(runs) == 3
    assert {r.status for r in runs} == {RunStatus.COMPLETED}


def test_the_loop_fires_what_falls_between_ticks_and_stops_when_cancelled() -> None:
    """Each tick fires the times since the previous tick; cancellation ends the loop."""
    h = memory_harness([reporting_saga()])
    now = [HOUR_START + 1]

    def clock() -> float:
        now[0] += 300  # every tick, five minutes pass
        return now[0]

    async def main() -> None:
        task = asyncio.create_task(run_cron_loop(h.engine, tick_seconds=0.001, clock=clock))
        while len(h.engine.runs.list(saga="report")) < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert len(h.engine.runs.list(saga="report")) >= 3


def test_the_loop_exits_at_once_when_the_bundle_has_no_schedules() -> None:
    """Without schedules there is nothing to poll for."""
    saga = Saga("plain")
    saga.step(lambda ctx: None, name="only")
    h = memory_harness([saga])
    asyncio.run(asyncio.wait_for(run_cron_loop(h.engine, tick_seconds=10), timeout=1))


def test_firing_logs_at_info_without_clashing_with_log_record_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The firing log line is emitted (its extras must not reuse LogRecord attribute names)."""
    h = memory_harness([reporting_saga()])
    with caplog.at_level(logging.INFO, logger="relay.cron"):
        fire_due(h.engine, after=HOUR_START, until=HOUR_START + 300)
    assert any("fired for" in r.getMessage() for r in caplog.records)
