"""The order saga on the AWS stack: moto's DynamoDB, SQS and S3, the Lambda entry point.

A poller in the test stands in for Lambda's SQS event source mapping: it receives real
batches (up to ten) from moto's queue, builds the exact event Lambda sends, invokes
``functions.aws.handler`` and deletes every message the partial batch response did not
report as failed. Runs are started through Mangum with API Gateway v2 payloads.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.domain.status import RunStatus
from functions import wiring
from functions.demo_services.payments import DECLINED_TOKEN
from functions.sagas.order import GOOD_TOKEN, demo_inputs
from tests.support.aws_stack import (
    TERMINAL,
    AwsStack,
    EventSourcePoller,
    configure_aws_env,
    run_status,
    start_order,
)
from tooling.checks import check_runs


@pytest.fixture
def order_lambda(
    aws_stack: AwsStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AwsStack:
    """The Lambda configured like a deployment serving the bundle's ``order`` saga."""
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path, sagas="order")
    return aws_stack


def test_order_completes_and_a_declined_order_compensates(
    order_lambda: AwsStack, tmp_path: Path
) -> None:
    """A good order COMPLETES and a declined one COMPENSATES; every invariant holds."""
    good = dict(demo_inputs(1, seed=7)[0], payment_token=GOOD_TOKEN)
    declined = dict(good, payment_token=DECLINED_TOKEN, customer_id="cust-declined")
    run_ids = [start_order(good, "order-good"), start_order(declined, "order-declined")]
    poller = EventSourcePoller(order_lambda)

    poller.run_until(
        lambda: all(run_status(run_id) in TERMINAL for run_id in run_ids), timeout_seconds=60
    )

    statuses = [run_status(run_id) for run_id in run_ids]
    assert statuses == [RunStatus.COMPLETED, RunStatus.COMPENSATED]
    report = check_runs(wiring.get_engine(), run_ids, data_dir=tmp_path)
    assert report.is_clean, report.to_json()
    assert len(report.invariant_results) == 5
    assert all(result == {"runs": 2, "violated": 0} for result in report.invariant_results.values())
    assert report.ledger_checked == ["order"]


def test_poisoned_message_in_a_real_batch_is_reported_then_dead_lettered(
    order_lambda: AwsStack,
) -> None:
    """One poisoned message in a real SQS batch: only its id fails; redrive moves it to the DLQ."""
    sqs = order_lambda.clients.sqs
    orders = demo_inputs(3, seed=11)
    run_ids = [
        start_order(dict(order, payment_token=GOOD_TOKEN), f"order-poison-{i}")
        for i, order in enumerate(orders)
    ]
    poison_id = sqs.send_message(QueueUrl=order_lambda.queue_url, MessageBody='{"run_id": ')[
        "MessageId"
    ]
    # Visibility 0: a reported message is visible again at once, so the redrive policy
    # (maxReceiveCount 5) is reached in seconds rather than after 5 visibility timeouts.
    poller = EventSourcePoller(order_lambda, visibility_timeout_seconds=0)

    first_batch = poller.poll_once()

    assert first_batch == 4  # the three runs' first steps and the poison
    assert poller.reported == Counter({poison_id: 1})

    def dead_lettered() -> list[Any]:
        return sqs.receive_message(
            QueueUrl=order_lambda.dead_letter_queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])

    poller.run_until(
        lambda: bool(dead_lettered()) and all(run_status(run_id) in TERMINAL for run_id in run_ids),
        timeout_seconds=60,
    )

    (moved,) = dead_lettered()
    assert moved["MessageId"] == poison_id
    assert moved["Body"] == '{"run_id": '
    assert poller.reported[poison_id] == 5  # maxReceiveCount of create_queue
    assert set(poller.reported) == {poison_id}  # no good message was ever reported
    # The runs end as their orders dictate (the demo inputs include a failing one).
    assert {run_status(run_id) for run_id in run_ids} <= {
        RunStatus.COMPLETED,
        RunStatus.COMPENSATED,
    }
