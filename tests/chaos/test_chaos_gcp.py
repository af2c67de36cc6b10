"""The chaos campaign on the GCP stack: order runs under failures, crashes and duplicates.

The stack of ``tests/e2e/test_gcp_stack.py``: Firestore and Cloud Tasks emulators, the
functions-framework server (gunicorn with one uvicorn worker) behind the token proxy.

* Failures and crashes are ``RELAY_FAULTS``. A crash ``os._exit``s the worker process
  after the step ran and before its result is committed; gunicorn starts a new worker,
  as Cloud Run starts a new instance, and the test restarts the whole server should it
  die (``FunctionServer.ensure_running``). The delivery in flight gets a 502 from the
  proxy, and the Cloud Tasks emulator redelivers it (it retries any non-2xx, about
  0.1 s later, forever); the redelivery is deferred (503) until the crashed attempt's
  lease runs out, then the step runs again under the same idempotency key.
* Duplicates are the proxy's: 10% of deliveries are forwarded twice, concurrently.
* The sweeper is wired as production wires it, a Cloud Scheduler job with an OIDC token
  calling ``POST /v1/sweep``: here a thread POSTs through the proxy every few seconds.
  With an emulator that retries forever it should rarely find anything; it is the
  backstop for a task Cloud Tasks gave up on.

The campaign waits for a condition (every run terminal) under a deadline generous for a
loaded 2-core machine; every read of the state it makes is bounded in time, and so is the
stall report it prints if the deadline passes (``tests/support/stall.py``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.domain.status import RunStatus
from core.faults import CRASH_EXIT_CODE
from functions.sagas.order import demo_inputs
from tests.support.gcp import FirestoreEmulator, PubSubEmulator, TasksEmulator
from tests.support.gcp_stack import GcpStack, gcp_stack, http_call
from tests.support.stall import Budget, DiagnosticTimeout, unfinished_runs, within
from tooling.checks import check_runs

if TYPE_CHECKING:
    from core.engine.engine import Engine

CHAOS_RUNS = 100
FAULTS = "*:fail@0.2;*:crash@0.05;seed=29"
DUPLICATES = 0.1
CAMPAIGN_SECONDS = 420
"""The deadline; idle, the campaign takes a fraction of it (figures printed)."""
LIST_TIMEOUT_SECONDS = 30.0
SWEEP_EVERY_SECONDS = 5.0
SWEEP_STALE_SECONDS = 30.0
TERMINAL = [RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED, RunStatus.CANCELLED]
ACTIVE = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPENSATING]


@pytest.fixture
def chaos_stack(
    firestore_emulator: FirestoreEmulator,
    tasks_emulator: TasksEmulator,
    pubsub_emulator: PubSubEmulator,
    tmp_path: Path,
) -> Iterator[GcpStack]:
    """The stack serving ``order`` with faults injected and duplicate deliveries."""
    with gcp_stack(
        firestore=firestore_emulator,
        tasks=tasks_emulator,
        pubsub=pubsub_emulator,
        tmp_path=tmp_path,
        sagas="order",
        faults=FAULTS,
        duplicate_probability=DUPLICATES,
        with_push_subscription=False,
    ) as stack:
        yield stack


class SweepJob:
    """Cloud Scheduler calling ``POST /v1/sweep`` with an OIDC token (through the proxy)."""

    def __init__(self, stack: GcpStack) -> None:
        self._url = f"{stack.proxy.url}/v1/sweep"
        self._stop = threading.Event()
        self.calls = 0
        self.redriven = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SweepJob:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(SWEEP_EVERY_SECONDS):
            try:
                status, body = http_call(
                    "POST", self._url, {"stale_after_seconds": SWEEP_STALE_SECONDS}
                )
            except OSError:
                continue  # the scheduler retries on its next tick
            self.calls += 1
            if status == 200:
                self.redriven += int(body["redriven"])


@pytest.mark.slow
@pytest.mark.timeout(CAMPAIGN_SECONDS + 240)
def test_chaos_campaign_on_the_gcp_stack_ends_clean(chaos_stack: GcpStack) -> None:
    """100 order runs under 20% failures, 5% crashes and 10% duplicates all end well."""
    stack = chaos_stack
    began = time.monotonic()
    run_ids = [
        stack.start_run("order", order, key=f"gcp-chaos-{number}")
        for number, order in enumerate(demo_inputs(CHAOS_RUNS, seed=29))
    ]
    engine = stack.engine()
    finished = 0
    try:
        with SweepJob(stack) as sweeper:
            deadline = time.monotonic() + CAMPAIGN_SECONDS
            while time.monotonic() < deadline:
                stack.function.ensure_running()
                finished = _finished(engine, finished)
                if finished >= CHAOS_RUNS:
                    break
                time.sleep(1.0)
        if finished < CHAOS_RUNS:
            pytest.fail(
                f"{finished}/{CHAOS_RUNS} runs terminal after {CAMPAIGN_SECONDS}s "
                f"({sweeper.calls} sweeps re-drove {sweeper.redriven} runs)\n"
                + _stall_report(engine, stack)
            )
        report = check_runs(engine, run_ids, data_dir=stack.data_dir)
    finally:
        engine.close()

    logs = stack.function.logs()
    figures = {
        "runs": CHAOS_RUNS,
        "statuses": dict(report.statuses),
        "step_attempts": report.step_attempts,
        "injected_failures": logs.count("RELAY_FAULTS: injected failure"),
        "injected_crashes": logs.count("RELAY_FAULTS: crashing worker"),
        "worker_exits_137": stack.function.crashes(CRASH_EXIT_CODE),
        "server_restarts": stack.function.restarts,
        "deliveries": stack.proxy.counters.requests,
        "duplicate_deliveries": stack.proxy.counters.duplicates,
        "answers": dict(sorted(stack.proxy.counters.statuses.items())),
        "sweeps": sweeper.calls,
        "swept_runs": sweeper.redriven,
        "seconds": round(time.monotonic() - began, 1),
    }
    print("gcp chaos:", json.dumps(figures))
    assert report.is_clean, report.to_json()
    assert set(report.statuses) == {"COMPLETED", "COMPENSATED"}, report.statuses
    assert len(report.invariant_results) >= 4
    assert report.ledger_checked == ["order"]
    assert figures["injected_failures"] > 0
    assert figures["worker_exits_137"] > 0, "no crash was injected"
    assert figures["duplicate_deliveries"] > 0


def _finished(engine: Engine, last: int) -> int:
    """How many runs are terminal (the last count if Firestore does not answer in time)."""
    try:
        runs = within(
            LIST_TIMEOUT_SECONDS,
            lambda: engine.runs.list(saga="order", statuses=TERMINAL, limit=1000),
            what="list finished runs",
        )
    except DiagnosticTimeout:
        return last
    return len(runs)


def _stall_report(engine: Engine, stack: GcpStack) -> str:
    """Where the unfinished runs stand, what the proxy saw, the log tail: at most ~60 s."""
    budget = Budget(total_seconds=60.0, per_call_seconds=10.0)
    lines = unfinished_runs(
        budget,
        list_unfinished=lambda: engine.runs.list(saga="order", statuses=ACTIVE, limit=1000),
        load=engine.runs.get,
    )
    counters = stack.proxy.counters
    lines.append(
        f"proxy: {counters.requests} deliveries, {counters.duplicates} duplicated, "
        f"answers {dict(sorted(counters.statuses.items()))}"
    )
    lines.append("function log tail:\n" + stack.function.logs()[-3000:])
    return "\n".join(lines + budget.notes)
