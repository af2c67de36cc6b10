"""The chaos campaign on the AWS stack: order runs under failures, crashes and duplicates.

The Lambda handler runs in a subprocess behind the event-source poller of
``tests/e2e/test_aws_stack.py``; an injected crash (``os._exit``) kills that process,
and the test starts a new one, as Lambda would start a new container. Its in-flight
batch comes back after the poller's 5 s visibility timeout. Duplicates are the
poller's (SQS at-least-once delivery); failures and crashes are ``RELAY_FAULTS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.faults import CRASH_EXIT_CODE
from functions import aws as lambda_entry
from functions import wiring
from functions.sagas.order import demo_inputs
from tests.support.aws import moto_stats, stats_delta
from tests.support.aws_stack import (
    CONTEXT,
    TERMINAL,
    AwsStack,
    configure_aws_env,
    start_order,
)
from tooling.checks import check_runs

ROOT = Path(__file__).resolve().parents[2]
CHAOS_RUNS = 100
CHAOS_DUPLICATES = 0.1


CRASH_FAULTS = "*:fail@0.2;*:crash@0.05"
POLLERS = 3
CAMPAIGN_SECONDS = 480
SWEEP_EVERY_SECONDS = 5.0
SWEEP_STALE_SECONDS = 10.0
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
poller = EventSourcePoller(stack, visibility_timeout_seconds=5,
                           duplicate_probability=float(sys.argv[1]), seed=int(sys.argv[2]))
while True:
    if poller.poll_once() == 0:
        time.sleep(0.1)
"""


@pytest.mark.slow
@pytest.mark.timeout(CAMPAIGN_SECONDS + 120)
def test_chaos_campaign_with_crashes_on_the_aws_stack_ends_clean(
    aws_stack: AwsStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 order runs under failures, crashes (the poller process dies) and duplicates."""
    monkeypatch.setenv("RELAY_FAULTS", f"{CRASH_FAULTS};seed=13")
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path, sagas="order")
    began = time.monotonic()
    run_ids = [
        start_order(order, f"crash-{number}")
        for number, order in enumerate(demo_inputs(CHAOS_RUNS, seed=13))
    ]
    engine = wiring.get_engine()
    exits: list[int] = []
    log_path = tmp_path / "poller.log"
    deadline = time.monotonic() + CAMPAIGN_SECONDS
    next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
    stats_before = moto_stats(aws_stack.clients.endpoint_url)
    timeline: list[dict[str, Any]] = []
    next_sample = time.monotonic()
    redriven = 0
    # Several pollers, as Lambda runs several containers: a crashed one does not stall
    # the campaign while it restarts and its batch waits out the visibility timeout.
    pollers: list[subprocess.Popen[bytes] | None] = [None] * POLLERS
    with log_path.open("ab") as log_file:
        try:
            while time.monotonic() < deadline:
                finished = engine.runs.list(saga="order", statuses=sorted(TERMINAL), limit=1000)
                if len(finished) >= CHAOS_RUNS:
                    break
                if time.monotonic() >= next_sample:
                    timeline.append(_sample(aws_stack, began, len(finished), redriven))
                    print("aws chaos sample:", json.dumps(timeline[-1]), flush=True)
                    next_sample = time.monotonic() + 10
                for slot, process in enumerate(pollers):
                    if process is not None and process.poll() is None:
                        continue
                    if process is not None:
                        exits.append(process.returncode)
                        assert process.returncode == CRASH_EXIT_CODE, log_path.read_text()[-3000:]
                    seed = str(slot * 1000 + len(exits))
                    pollers[slot] = subprocess.Popen(
                        [sys.executable, "-c", POLLER_SCRIPT, str(CHAOS_DUPLICATES), seed],
                        cwd=ROOT,
                        env=dict(os.environ),
                        stdout=log_file,
                        stderr=log_file,
                    )
                if time.monotonic() >= next_sweep:
                    # The sweeper schedule, as modules/aws creates it (every minute there,
                    # scaled down here): a message that exceeded maxReceiveCount while its
                    # worker kept crashing sits in the dead-letter queue, and only the
                    # sweeper re-drives its run.
                    answer = lambda_entry.handler(
                        {"relay": "sweep", "stale_after_seconds": SWEEP_STALE_SECONDS}, CONTEXT
                    )
                    redriven += int(answer["redriven"])
                    next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
                time.sleep(0.5)
            else:
                pytest.fail(
                    f"runs not terminal after {CAMPAIGN_SECONDS}s ({len(exits)} crashes): "
                    + _stall_report(engine, run_ids, aws_stack)
                )
        finally:
            for process in pollers:
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()

    report = check_runs(engine, run_ids, data_dir=tmp_path)
    figures = {
        "runs": CHAOS_RUNS,
        "statuses": dict(report.statuses),
        "step_attempts": report.step_attempts,
        "crashes": len(exits),
        "seconds": round(time.monotonic() - began, 1),
        "redriven": redriven,
        "moto": stats_delta(moto_stats(aws_stack.clients.endpoint_url), stats_before),
    }
    print("aws chaos with crashes:", json.dumps(figures))
    assert report.is_clean, report.to_json()
    assert exits, "no crash was injected"


def _sample(stack: AwsStack, began: float, finished: int, redriven: int) -> dict[str, Any]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = stack.clients.sqs.get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=names
    )["Attributes"]
    dlq = stack.clients.sqs.get_queue_attributes(
        QueueUrl=stack.dead_letter_queue_url, AttributeNames=names[:1]
    )["Attributes"]
    return {
        "t": round(time.monotonic() - began),
        "finished": finished,
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        "dlq": int(dlq.get("ApproximateNumberOfMessages", 0)),
        "redriven": redriven,
    }


def _stall_report(engine: Any, run_ids: list[str], stack: AwsStack) -> str:
    """Where the unfinished runs stand and what the queues hold: what a stall needs."""
    lines = []
    for run_id in run_ids:
        snapshot = engine.runs.get(run_id)
        if snapshot.run.status.is_terminal:
            continue
        steps = ", ".join(
            f"{r.name}={r.status.value}#{r.attempt}"
            + (f" lease+{r.lease_until - time.time():.0f}s" if r.lease_until else "")
            + (f" retry+{r.retry_at - time.time():.0f}s" if r.retry_at else "")
            for r in snapshot.steps.values()
        )
        lines.append(f"{run_id} {snapshot.run.status.value}: {steps}")
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    for label, url in (("queue", stack.queue_url), ("dlq", stack.dead_letter_queue_url)):
        attributes = stack.clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        lines.append(f"{label}: {attributes.get('Attributes')}")
    return "\n".join(lines[:40])
