"""One test's AWS deployment on moto server, and the Lambda event source mapping in miniature.

``aws_stack`` creates a table, a standard queue with its dead-letter queue and a bucket;
``configure_aws_env`` points the Lambda entry point at them as a deployment would;
``EventSourcePoller`` receives real batches from the queue and invokes the handler with
the exact event Lambda builds, deleting what the partial batch response did not report.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.domain.status import RunStatus
from functions import aws as lambda_entry
from functions import wiring
from infra.aws.dynamodb import create_table
from infra.aws.sqs import create_queue
from tests.support.aws import REGION, AwsClients, delete_bucket, unique_name

ROOT = Path(__file__).resolve().parents[2]


EVENTS = ROOT / "tests" / "events"


def golden(name: str) -> dict[str, Any]:
    """A fresh copy of the golden payload ``tests/events/<name>.json``."""
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


@dataclass(frozen=True)
class AwsStack:
    """The resources one test's deployment uses on moto server."""

    clients: AwsClients
    table: str
    queue_url: str
    dead_letter_queue_url: str
    bucket: str


class LambdaContext:
    """The attributes of Lambda's context object that Mangum and our logs read."""

    function_name = "relay"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:relay"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


CONTEXT = LambdaContext()


def configure_aws_env(
    monkeypatch: pytest.MonkeyPatch, stack: AwsStack, *, data_dir: Path, sagas: str
) -> None:
    """Environment of a Lambda function deployed on ``stack`` (moto as the endpoint)."""
    monkeypatch.setenv("RELAY_BACKEND", "aws")
    monkeypatch.setenv("RELAY_DYNAMODB_TABLE", stack.table)
    monkeypatch.setenv("RELAY_SQS_QUEUE_URL", stack.queue_url)
    monkeypatch.setenv("RELAY_S3_BUCKET", stack.bucket)
    monkeypatch.setenv("RELAY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.clients.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("RELAY_SAGAS", sagas)
    wiring.reset_engine()
    lambda_entry._visibility_queue.cache_clear()


@pytest.fixture
def aws_stack(aws_clients: AwsClients) -> Iterator[AwsStack]:
    """A DynamoDB table, a standard SQS queue (with DLQ) and an S3 bucket for one test."""
    table = unique_name("relay-state")
    create_table(aws_clients.dynamodb, table_name=table)
    queue = create_queue(aws_clients.sqs, name=unique_name("relay-steps"))
    bucket = unique_name("relay-results")
    aws_clients.s3.create_bucket(Bucket=bucket)
    # Mangum runs requests on the thread's event loop and makes one (never closed) when
    # there is none, as suits a Lambda container; a test gives it one and closes it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield AwsStack(aws_clients, table, queue.queue_url, queue.dead_letter_queue_url, bucket)
    lambda_entry._http_handler.cache_clear()
    asyncio.set_event_loop(None)
    loop.close()
    wiring.reset_engine()
    lambda_entry._visibility_queue.cache_clear()
    aws_clients.dynamodb.delete_table(TableName=table)
    aws_clients.sqs.delete_queue(QueueUrl=queue.queue_url)
    aws_clients.sqs.delete_queue(QueueUrl=queue.dead_letter_queue_url)
    delete_bucket(aws_clients, bucket)


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
