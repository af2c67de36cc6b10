"""AWS adapters (DynamoDB, SQS, S3) against moto server, for the contract and engine suites.

Each fixture creates its own table, queue or bucket with a unique name on the session's
moto server (``tests/support/aws.py``) and deletes it afterwards. The SQS queue is a
FIFO queue, the kind whose de-duplication the contract's duplicate-enqueue tests need;
standard-queue behaviour is covered in ``test_aws_backend.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.ports.api_keys import ApiKeyStore
from core.ports.io_manager import IOManager
from core.ports.task_queue import PullQueue
from infra.aws.dynamodb import DynamoDBStateStore, create_table
from infra.aws.dynamodb_api_keys import DynamoDBApiKeyStore
from infra.aws.s3_io import S3IOManager
from infra.aws.sqs import SqsTaskQueue, create_queue
from tests.support.aws import AwsClients, aws_clients, delete_bucket, moto_endpoint, unique_name
from tests.support.backends.registry import (
    StoreAndQueue,
    api_key_store_backend,
    io_manager_backend,
    real_time_pull_queue_backend,
    state_store_backend,
)

__all__ = [
    "aws_clients",
    "dynamodb_keys",
    "dynamodb_store",
    "moto_endpoint",
    "s3_io",
    "sqs_queue",
]


@state_store_backend
def dynamodb_store(aws_clients: AwsClients) -> Iterator[StoreAndQueue]:
    name = unique_name("relay-state")
    create_table(aws_clients.dynamodb, table_name=name)
    yield StoreAndQueue(
        store=DynamoDBStateStore(aws_clients.dynamodb, table_name=name), outbox_queue=None
    )
    aws_clients.dynamodb.delete_table(TableName=name)


@api_key_store_backend
def dynamodb_keys(aws_clients: AwsClients) -> Iterator[ApiKeyStore]:
    name = unique_name("relay-keys")
    create_table(aws_clients.dynamodb, table_name=name)
    yield DynamoDBApiKeyStore(aws_clients.dynamodb, table_name=name)
    aws_clients.dynamodb.delete_table(TableName=name)


@real_time_pull_queue_backend
def sqs_queue(aws_clients: AwsClients) -> Iterator[PullQueue]:
    created = create_queue(aws_clients.sqs, name=unique_name("relay-steps"), is_fifo=True)
    yield SqsTaskQueue(aws_clients.sqs, queue_url=created.queue_url)
    aws_clients.sqs.delete_queue(QueueUrl=created.queue_url)
    aws_clients.sqs.delete_queue(QueueUrl=created.dead_letter_queue_url)


@io_manager_backend
def s3_io(aws_clients: AwsClients) -> Iterator[IOManager]:
    bucket = unique_name("relay-results")
    aws_clients.s3.create_bucket(Bucket=bucket)
    yield S3IOManager(aws_clients.s3, bucket=bucket, prefix="outputs/")
    delete_bucket(aws_clients, bucket)
