"""AWS adapters (DynamoDB, SQS, S3) against moto server, for the contract suites.

Each fixture creates its own table, queue or bucket with a unique name on the session's
moto server (``tests/emulators/aws.py``) and deletes it afterwards. The SQS queue is a
FIFO queue, the kind whose de-duplication the contract's duplicate-enqueue tests need;
standard-queue behaviour is covered in ``test_aws_backend.py``. S3 is registered by its
own change.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.ports.task_queue import PullQueue
from infra.aws.dynamodb import DynamoDBStateStore, create_table
from infra.aws.sqs import SqsTaskQueue, create_queue
from tests.contract.registry import (
    StoreAndQueue,
    real_time_pull_queue_backend,
    state_store_backend,
)
from tests.emulators.aws import AwsClients, aws_clients, moto_endpoint, unique_name

__all__ = ["aws_clients", "dynamodb_store", "moto_endpoint", "sqs_queue"]


@state_store_backend
def dynamodb_store(aws_clients: AwsClients) -> Iterator[StoreAndQueue]:
    name = unique_name("relay-state")
    create_table(aws_clients.dynamodb, table_name=name)
    yield StoreAndQueue(
        store=DynamoDBStateStore(aws_clients.dynamodb, table_name=name), outbox_queue=None
    )
    aws_clients.dynamodb.delete_table(TableName=name)


@real_time_pull_queue_backend
def sqs_queue(aws_clients: AwsClients) -> Iterator[PullQueue]:
    created = create_queue(aws_clients.sqs, name=unique_name("relay-steps"), is_fifo=True)
    yield SqsTaskQueue(aws_clients.sqs, queue_url=created.queue_url)
    aws_clients.sqs.delete_queue(QueueUrl=created.queue_url)
    aws_clients.sqs.delete_queue(QueueUrl=created.dead_letter_queue_url)
