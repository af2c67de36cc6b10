"""AWS adapters (DynamoDB, SQS, S3) against moto server, for the contract suites.

Each fixture creates its own table, queue or bucket with a unique name on the session's
moto server (``tests/emulators/aws.py``) and deletes it afterwards. SQS and S3
are registered by their own changes.
"""

from __future__ import annotations

from collections.abc import Iterator

from infra.aws.dynamodb import DynamoDBStateStore, create_table
from tests.contract.registry import StoreAndQueue, state_store_backend
from tests.emulators.aws import AwsClients, aws_clients, moto_endpoint, unique_name

__all__ = ["aws_clients", "dynamodb_store", "moto_endpoint"]


@state_store_backend
def dynamodb_store(aws_clients: AwsClients) -> Iterator[StoreAndQueue]:
    name = unique_name("relay-state")
    create_table(aws_clients.dynamodb, table_name=name)
    yield StoreAndQueue(
        store=DynamoDBStateStore(aws_clients.dynamodb, table_name=name), outbox_queue=None
    )
    aws_clients.dynamodb.delete_table(TableName=name)
