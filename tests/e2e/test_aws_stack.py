"""The order saga on the AWS stack: moto's DynamoDB, SQS and S3, the Lambda entry point.

A poller in the test stands in for Lambda's SQS event source mapping: it receives real
batches (up to ten) from moto's queue, builds the exact event Lambda sends, invokes
``functions.aws.handler`` and deletes every message the partial batch response did not
report as failed. Runs are started through Mangum with API Gateway v2 payloads.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.domain.status import RunStatus
from functions import aws as lambda_entry
from functions import wiring
from functions.demo_services.payments import DECLINED_TOKEN
from functions.sagas.order import GOOD_TOKEN, demo_inputs
from tests.emulators.aws import REGION
from tests.functions.test_aws_handler import (  # noqa: F401 (fixtures used by name)
    CONTEXT,
    AwsStack,
    aws_clients,
    aws_stack,
    configure_aws_env,
    golden,
    moto_endpoint,
)
from tooling.checks import check_runs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The handler configures the root logger on first use; put it back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    wiring.reset_engine()


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.COMPENSATED, RunStatus.FAILED})


class EventSourcePoller:
    """Lambda's SQS event source mapping, in miniature (one poller, batches of ten)."""

    def __init__(
        self,
        stack: AwsStack,
        *,
        visibility_timeout_seconds: int = 30,
        duplicate_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._stack = stack
        self._visibility = visibility_timeout_seconds
        self._duplicate_probability = duplicate_probability
        self._rng = random.Random(seed)
        self.duplicates = 0
        self._arn = stack.clients.sqs.get_queue_attributes(
            QueueUrl=stack.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.batches = 0
        self.reported: Counter[str] = Counter()

    def poll_once(self) -> int:
        """Receive one batch, invoke the handler, delete what succeeded; the batch size."""
        sqs = self._stack.clients.sqs
        messages = sqs.receive_message(
            QueueUrl=self._stack.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=self._visibility,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        self.batches += 1
        response = lambda_entry.handler(self.event_for(messages), CONTEXT)
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        self.reported.update(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        self._duplicate_some(done)
        if done:
            sqs.delete_message_batch(
                QueueUrl=self._stack.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(messages)

    def _duplicate_some(self, messages: list[Any]) -> None:
        """SQS is at-least-once: deliver some handled messages a second time."""
        copies = [m for m in messages if self._rng.random() < self._duplicate_probability]
        for message in copies:
            self._stack.clients.sqs.send_message(
                QueueUrl=self._stack.queue_url, MessageBody=message["Body"]
            )
        self.duplicates += len(copies)

    def event_for(self, messages: list[Any]) -> dict[str, Any]:
        """The event Lambda builds from received messages (``Records[]`` of ``aws:sqs``)."""
        template = golden("sqs_batch")["Records"][0]
        records = []
        for message in messages:
            record = copy.deepcopy(template)
            record.update(
                messageId=message["MessageId"],
                receiptHandle=message["ReceiptHandle"],
                body=message["Body"],
                attributes=dict(message.get("Attributes", {})),
                messageAttributes={},
                md5OfBody=message["MD5OfBody"],
                eventSourceARN=self._arn,
                awsRegion=REGION,
            )
            records.append(record)
        return {"Records": records}

    def run_until(self, is_done: Callable[[], bool], *, timeout_seconds: float) -> None:
        """Poll until ``is_done()`` holds; fail after ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.poll_once() == 0:
                if is_done():
                    return
                time.sleep(0.1)
        pytest.fail(f"runs not terminal after {timeout_seconds}s ({self.batches} batches)")


def start_order(order: dict[str, Any], key: str) -> str:
    """Start an order run through Mangum with an API Gateway v2 POST; its run id."""
    event = golden("apigw_v2_start")
    path = "/v1/sagas/order/runs"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["body"] = json.dumps(order)
    event["headers"]["content-length"] = str(len(event["body"]))
    event["headers"]["idempotency-key"] = key
    response = lambda_entry.handler(event, CONTEXT)
    assert response["statusCode"] == 202, response["body"]
    run_id: str = json.loads(response["body"])["run_id"]
    return run_id


def run_status(run_id: str) -> RunStatus:
    """The run's status read through the Function URL GET (Mangum, as a client would)."""
    event = golden("function_url_get_run")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/runs/{run_id}"
    response = lambda_entry.handler(event, CONTEXT)
    assert response["statusCode"] == 200, response["body"]
    return RunStatus(json.loads(response["body"])["status"])


@pytest.fixture
def order_lambda(
    aws_stack: AwsStack,  # noqa: F811 (the fixture)
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
