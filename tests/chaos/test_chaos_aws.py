"""The chaos campaign on the AWS stack: order runs under failures, crashes and duplicates.

The Lambda handler runs in subprocesses behind the event-source poller of
``tests/support/aws_stack.py`` (several, as Lambda runs several containers); an injected
crash (``os._exit``) kills one, and the test starts a new one, as Lambda would start a
new container. Its in-flight batch comes back after the poller's visibility timeout,
which is, as AWS advises for event source mappings, well above the time a batch takes on
a busy machine: a shorter one (5 s here until issue 9) makes a slow poller's batch
visible again while it still works on it, so another poller handles the same messages
again, which makes everything slower still.
Duplicates are the poller's (SQS at-least-once delivery); failures and crashes are
``RELAY_FAULTS``. The sweeper is invoked from a thread every few seconds, as its
EventBridge Scheduler schedule would (every minute in a deployment): a message that
exceeded ``maxReceiveCount`` while its worker kept crashing sits in the dead-letter queue,
and only the sweeper re-drives its run.

The campaign waits for a condition (every run terminal) under a deadline generous for a
loaded 2-core machine; it normally ends far below it (see the printed figures). If it
misses the deadline, the stall report says where the unfinished runs stand and what the
queues hold, with every call bounded (``tests/support/stall.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.domain.status import RunStatus
from core.faults import CRASH_EXIT_CODE
from core.ports.state_store import StateStore
from functions import aws as lambda_entry
from functions import wiring
from functions.sagas.order import demo_inputs
from infra.aws.dynamodb import DynamoDBStateStore
from tests.support.aws import moto_stats, quick_clients, stats_delta
from tests.support.aws_stack import (
    CONTEXT,
    TERMINAL,
    AwsStack,
    configure_aws_env,
    start_order,
)
from tests.support.stall import Budget, DiagnosticTimeout, unfinished_runs, within
from tooling.checks import check_runs

ROOT = Path(__file__).resolve().parents[2]
CHAOS_RUNS = 100
CHAOS_DUPLICATES = 0.1
CRASH_FAULTS = "*:fail@0.2;*:crash@0.05"
POLLERS = 3
CAMPAIGN_SECONDS = 600
"""The deadline; idle, the campaign takes a small fraction of it (figures printed)."""
VISIBILITY_TIMEOUT_SECONDS = 30
CHECK_EVERY_SECONDS = 3.0
SAMPLE_EVERY_SECONDS = 15.0
SWEEP_EVERY_SECONDS = 10.0
SWEEP_STALE_SECONDS = 45.0
"""Above a message's queueing time on a loaded machine and the visibility timeout (a
crashed poller's batch is merely late until then); a deployment uses 120 s, every minute."""
LIST_TIMEOUT_SECONDS = 30.0
ACTIVE = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPENSATING]
POLLER_SCRIPT = """
import os, sys, time
import boto3
from tests.support.aws import AwsClients
from tests.support.aws_stack import AwsStack, EventSourcePoller

options = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
clients = AwsClients(
    endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    dynamodb=boto3.client("dynamodb", **options),
    sqs=boto3.client("sqs", **options),
    s3=boto3.client("s3", **options),
)
stack = AwsStack(clients, os.environ["RELAY_DYNAMODB_TABLE"], os.environ["RELAY_SQS_QUEUE_URL"],
                 "", os.environ["RELAY_S3_BUCKET"])
poller = EventSourcePoller(stack, visibility_timeout_seconds=int(sys.argv[3]),
                           duplicate_probability=float(sys.argv[1]), seed=int(sys.argv[2]))
while True:
    if poller.poll_once() == 0:
        time.sleep(0.1)
"""


class SweepSchedule:
    """The sweeper's schedule: the Lambda handler invoked with ``{"relay": "sweep"}``."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.calls = 0
        self.redriven = 0
        self.messages = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="sweep schedule", daemon=True)

    def __enter__(self) -> SweepSchedule:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        event = {"relay": "sweep", "stale_after_seconds": SWEEP_STALE_SECONDS}
        while not self._stop.wait(SWEEP_EVERY_SECONDS):
            try:
                answer = lambda_entry.handler(event, CONTEXT)
            except Exception as exc:  # the scheduler retries on its next tick
                self.failures.append(repr(exc))
                continue
            self.calls += 1
            self.redriven += int(answer["redriven"])
            self.messages += int(answer["messages"])


@pytest.mark.slow
@pytest.mark.timeout(CAMPAIGN_SECONDS + 300)
def test_chaos_campaign_with_crashes_on_the_aws_stack_ends_clean(
    aws_stack: AwsStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 order runs under failures, crashes (the poller process dies) and duplicates."""
    monkeypatch.setenv("RELAY_FAULTS", f"{CRASH_FAULTS};seed=13")
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path, sagas="order")
    stats_before = moto_stats(aws_stack.clients.endpoint_url)
    began = time.monotonic()
    run_ids = [
        start_order(order, f"crash-{number}")
        for number, order in enumerate(demo_inputs(CHAOS_RUNS, seed=13))
    ]
    engine = wiring.get_engine()
    exits: list[int] = []
    samples: list[dict[str, Any]] = []
    log_path = tmp_path / "poller.log"
    deadline = time.monotonic() + CAMPAIGN_SECONDS
    next_sample = time.monotonic()
    # Several pollers, as Lambda runs several containers: a crashed one does not stall
    # the campaign while it restarts and its batch waits out the visibility timeout.
    pollers: list[subprocess.Popen[bytes] | None] = [None] * POLLERS
    finished = 0
    with log_path.open("ab") as log_file, SweepSchedule() as sweeper:
        try:
            while time.monotonic() < deadline:
                finished = _finished(engine.store, finished)
                if finished >= CHAOS_RUNS:
                    break
                for slot, process in enumerate(pollers):
                    if process is not None and process.poll() is None:
                        continue
                    if process is not None:
                        exits.append(process.returncode)
                        assert process.returncode == CRASH_EXIT_CODE, log_path.read_text()[-3000:]
                    seed = str(slot * 1000 + len(exits))
                    pollers[slot] = subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            POLLER_SCRIPT,
                            str(CHAOS_DUPLICATES),
                            seed,
                            str(VISIBILITY_TIMEOUT_SECONDS),
                        ],
                        cwd=ROOT,
                        env=dict(os.environ),
                        stdout=log_file,
                        stderr=log_file,
                    )
                if time.monotonic() >= next_sample:
                    samples.append(_sample(aws_stack, began, finished, sweeper))
                    next_sample = time.monotonic() + SAMPLE_EVERY_SECONDS
                time.sleep(CHECK_EVERY_SECONDS)
        finally:
            for process in pollers:
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    seconds = round(time.monotonic() - began, 1)
    if finished < CHAOS_RUNS:
        # The pollers and the sweeper are stopped: the report competes with nothing.
        pytest.fail(
            f"{finished}/{CHAOS_RUNS} runs terminal after {CAMPAIGN_SECONDS}s "
            f"({len(exits)} crashes, {sweeper.redriven} runs re-driven by "
            f"{sweeper.calls} sweeps)\nqueue over time: {json.dumps(samples)}\n"
            + _stall_report(aws_stack)
        )

    report = check_runs(engine, run_ids, data_dir=tmp_path)
    figures = {
        "runs": CHAOS_RUNS,
        "statuses": dict(report.statuses),
        "step_attempts": report.step_attempts,
        "crashes": len(exits),
        "seconds": seconds,
        "sweeps": sweeper.calls,
        "swept_runs": sweeper.redriven,
        "swept_messages": sweeper.messages,
        "max_queue_depth": max((s["visible"] + s["delayed"] for s in samples), default=0),
        "moto": stats_delta(moto_stats(aws_stack.clients.endpoint_url), stats_before),
    }
    print("aws chaos with crashes:", json.dumps(figures))
    print("aws chaos queue over time:", json.dumps(samples))
    assert report.is_clean, report.to_json()
    assert set(report.statuses) == {"COMPLETED", "COMPENSATED"}, report.statuses
    assert exits, "no crash was injected"
    assert not sweeper.failures, sweeper.failures[:5]


def _finished(store: StateStore, last: int) -> int:
    """How many runs are terminal (the last count if the store does not answer in time).

    Counted (``Select=COUNT``), not listed: a list of a hundred headers every few seconds
    costs moto more than the campaign's own reads.
    """
    try:
        counts = within(
            LIST_TIMEOUT_SECONDS,
            lambda: store.count_runs_by_status(saga="order"),
            what="count finished runs",
        )
    except DiagnosticTimeout:
        return last
    return sum(counts[status] for status in TERMINAL)


def _queue_depth(stack: AwsStack) -> dict[str, int]:
    names: Any = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    sqs = quick_clients(stack.clients.endpoint_url).sqs
    queue = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=names)
    dlq = sqs.get_queue_attributes(QueueUrl=stack.dead_letter_queue_url, AttributeNames=names)
    counts = [int(queue["Attributes"].get(name, "0")) for name in names]
    return {
        "visible": counts[0],
        "in_flight": counts[1],
        "delayed": counts[2],
        "dlq": sum(int(dlq["Attributes"].get(name, "0")) for name in names),
    }


def _sample(stack: AwsStack, began: float, finished: int, sweeper: SweepSchedule) -> dict[str, Any]:
    """Queue depth and progress at one moment (bounded: a sample is never worth a stall)."""
    sample: dict[str, Any] = {"t": round(time.monotonic() - began), "finished": finished}
    try:
        sample.update(within(10.0, lambda: _queue_depth(stack), what="queue depth"))
    except Exception as exc:  # DiagnosticTimeout included: a sample is optional
        sample["error"] = str(exc)
    sample["swept_runs"] = sweeper.redriven
    return sample


def _stall_report(stack: AwsStack) -> str:
    """Where the unfinished runs stand and what the queues hold, in at most ~60 s."""
    budget = Budget(total_seconds=60.0, per_call_seconds=10.0)
    clients = quick_clients(stack.clients.endpoint_url)
    store = DynamoDBStateStore(clients.dynamodb, table_name=stack.table)
    lines = unfinished_runs(
        budget,
        list_unfinished=lambda: store.list_runs(saga="order", statuses=ACTIVE, limit=1000),
        load=lambda run_id: store.load_run(run_id=run_id),
    )
    depth = budget.call("queue depth", lambda: _queue_depth(stack))
    lines.append(f"queues: {depth}")
    return "\n".join(lines + budget.notes)
