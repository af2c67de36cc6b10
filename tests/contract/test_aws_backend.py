"""Guarantees specific to the AWS adapters on moto server, beyond the shared port contracts.

Call counts are observed on the real clients through botocore's event hooks (nothing is
stubbed): they are the cost figures of the AWS backend.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.domain.records import Message, RunId, RunRecord, StateChange, StepName, StepRecord
from core.domain.status import Action, RunStatus
from core.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    DefinitionError,
    QueueUnavailable,
    StoreUnavailable,
)
from infra.aws.dynamodb import DynamoDBStateStore, create_table
from infra.aws.s3_io import S3IOManager
from infra.aws.sqs import SqsTaskQueue, create_queue
from infra.local.runtime.supervisor import free_port
from tests.support.aws import AwsClients, counting, unique_name
from tests.support.backends.aws import delete_bucket

T0 = 1_700_000_000.0
DAY = 24 * 3600.0


@pytest.fixture
def table(aws_clients: AwsClients) -> Iterator[str]:
    name = unique_name("relay-state")
    create_table(aws_clients.dynamodb, table_name=name)
    yield name
    aws_clients.dynamodb.delete_table(TableName=name)


@pytest.fixture
def store(aws_clients: AwsClients, table: str) -> DynamoDBStateStore:
    return DynamoDBStateStore(aws_clients.dynamodb, table_name=table, retention_seconds=DAY)


def new_run(
    run_id: str = "r-1", steps: tuple[str, ...] = ("a", "b")
) -> tuple[RunRecord, list[StepRecord]]:
    run = RunRecord(
        run_id=RunId(run_id),
        saga="order",
        status=RunStatus.PENDING,
        input={"n": 1},
        definition_hash="h",
        created_at=T0,
        updated_at=T0,
    )
    return run, [StepRecord(run_id=RunId(run_id), name=StepName(n), updated_at=T0) for n in steps]


def raw_items(aws: AwsClients, table: str, run_id: str) -> dict[str, dict[str, Any]]:
    items = aws.dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


# -- DynamoDB ------------------------------------------------------------------------------


def test_dynamodb_calls_per_step_transition(
    aws_clients: AwsClients, store: DynamoDBStateStore
) -> None:
    """Create, load, claim and commit are one call each; a terminal commit also stamps step TTLs."""
    run, steps = new_run()
    with counting(aws_clients.dynamodb) as create_calls:
        store.create_run(run=run, steps=steps, outbox=())
    with counting(aws_clients.dynamodb) as load_calls:
        snapshot = store.load_run(run_id=run.run_id)
    assert snapshot is not None
    claimed = snapshot.step("a").claimed(now=T0 + 1, lease_until=T0 + 31, error=None)
    with counting(aws_clients.dynamodb) as claim_calls:
        store.apply(
            change=StateChange(
                run.run_id,
                run=snapshot.run.running(now=T0 + 1),
                steps=(claimed,),
            )
        )
    done = claimed.succeeded(now=T0 + 2, output={"ok": 1})
    with counting(aws_clients.dynamodb) as commit_calls:
        store.apply(change=StateChange(run.run_id, steps=(done,)))
    after = store.load_run(run_id=run.run_id)
    assert after is not None
    finished = after.run.completed(now=T0 + 3, output=None)
    b_done = after.step("b").event_taken(now=T0 + 3, output=None)  # PENDING to SUCCEEDED
    with counting(aws_clients.dynamodb) as final_calls:
        store.apply(change=StateChange(run.run_id, run=finished, steps=(b_done,)))

    assert create_calls == {"TransactWriteItems": 1}
    assert load_calls == {"Query": 1}
    assert claim_calls == {"TransactWriteItems": 1}
    assert commit_calls == {"TransactWriteItems": 1}
    # The terminal commit, then one Query and one UpdateItem per step it did not write.
    assert final_calls == {"TransactWriteItems": 1, "Query": 1, "UpdateItem": 1}


def test_finished_run_expires_with_all_its_steps(
    aws_clients: AwsClients, store: DynamoDBStateStore, table: str
) -> None:
    """A terminal run's header and every step get expires_at = updated_at + retention."""
    run, steps = new_run(steps=("a", "b", "c"))
    store.create_run(run=run, steps=steps, outbox=())
    failed = run.failed(now=T0 + 5, error="boom")
    a_failed = steps[0].failed(now=T0 + 5, error="boom")

    store.apply(change=StateChange(run.run_id, run=failed, steps=(a_failed,)))

    items = raw_items(aws_clients, table, "r-1")
    assert {sk: item.get("expires_at", {}).get("N") for sk, item in items.items()} == {
        sk: str(int(T0 + 5 + DAY)) for sk in ("RUN", "STEP#a", "STEP#b", "STEP#c")
    }
    assert items["RUN"]["gsi2pk"] == {"S": "STATUS#FAILED"}


def test_retried_run_loses_its_expiry(
    aws_clients: AwsClients, store: DynamoDBStateStore, table: str
) -> None:
    """A run made active again (retry) keeps no TTL on its header or any step."""
    run, steps = new_run(steps=("a", "b"))
    store.create_run(run=run, steps=steps, outbox=())
    failed = run.failed(now=T0 + 5, error="boom")
    store.apply(change=StateChange(run.run_id, run=failed))
    retried = failed.retried(
        now=T0 + 6, definition_hash=failed.definition_hash, is_compensating=False
    )
    a_retried = steps[0].budget_reset(now=T0 + 6)

    with counting(aws_clients.dynamodb) as calls:
        store.apply(change=StateChange(run.run_id, run=retried, steps=(a_retried,)))

    items = raw_items(aws_clients, table, "r-1")
    assert [sk for sk, item in items.items() if "expires_at" in item] == []
    snapshot = store.load_run(run_id=run.run_id)
    assert snapshot is not None
    assert snapshot.run == retried
    # Revival: the guarded write fails, the steps' TTL is cleared, the write is repeated.
    assert calls == {"TransactWriteItems": 2, "Query": 1, "UpdateItem": 1}


def test_stale_retry_of_a_finished_run_still_conflicts(store: DynamoDBStateStore) -> None:
    """The revival path keeps the version check: a stale header is still a conflict."""
    run, steps = new_run()
    store.create_run(run=run, steps=steps, outbox=())
    store.apply(change=StateChange(run.run_id, run=run.failed(now=T0 + 1, error="boom")))

    with pytest.raises(
        ConcurrencyConflict, match="run header: expected version 1, found version 2"
    ):
        store.apply(change=StateChange(run.run_id, run=run.running(now=T0 + 2)))


def test_change_over_the_transaction_limit_is_refused(store: DynamoDBStateStore) -> None:
    """Over 100 items cannot be one DynamoDB transaction: a clear error, and nothing written."""
    run, steps = new_run(steps=tuple(f"s{i}" for i in range(100)))

    with pytest.raises(DefinitionError, match="at most 100"):
        store.create_run(run=run, steps=steps, outbox=())

    assert store.load_run(run_id=run.run_id) is None


def test_missing_table_is_a_configuration_error(aws_clients: AwsClients) -> None:
    """A wrong table name says so (with region and endpoint) instead of looking retryable."""
    store = DynamoDBStateStore(aws_clients.dynamodb, table_name="no-such-table")

    with pytest.raises(ConfigurationError, match="no-such-table"):
        store.load_run(run_id=RunId("r-1"))
    assert store.describe()["table"] == "no-such-table"
    assert store.describe()["endpoint"] == aws_clients.endpoint_url


def test_create_table_with_exist_ok_is_idempotent(aws_clients: AwsClients, table: str) -> None:
    """Creating the table again is a no-op with exist_ok, an error without."""
    create_table(aws_clients.dynamodb, table_name=table, exist_ok=True)

    with pytest.raises(ConfigurationError, match=table):
        create_table(aws_clients.dynamodb, table_name=table)


def unreachable_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        service,  # type: ignore[call-overload]
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )


def test_unreachable_services_raise_retryable_errors(aws_clients: AwsClients) -> None:
    """Connection failures become StoreUnavailable / QueueUnavailable, chained to botocore's."""
    clients = [unreachable_client(s) for s in ("dynamodb", "sqs", "s3")]
    try:
        store = DynamoDBStateStore(clients[0], table_name="t")
        queue = SqsTaskQueue(clients[1], queue_url="http://127.0.0.1:1/000000000000/q")
        io = S3IOManager(clients[2], bucket="b")

        with pytest.raises(StoreUnavailable) as store_error:
            store.load_run(run_id=RunId("r-1"))
        with pytest.raises(QueueUnavailable):
            queue.pending_count()
        with pytest.raises(StoreUnavailable):
            io.save(run_id="r-1", step="s", result_id="0", value=1)
    finally:
        for client in clients:
            client.close()

    assert store_error.value.retryable
    assert type(store_error.value.__cause__).__module__.startswith("botocore")


# -- SQS -----------------------------------------------------------------------------------


@pytest.fixture
def standard_queue(aws_clients: AwsClients) -> Iterator[str]:
    created = create_queue(aws_clients.sqs, name=unique_name("relay-std"), max_receive_count=2)
    yield created.queue_url
    aws_clients.sqs.delete_queue(QueueUrl=created.queue_url)
    aws_clients.sqs.delete_queue(QueueUrl=created.dead_letter_queue_url)


def message(step: str = "s", not_before: float | None = None) -> Message:
    return Message(RunId("r-1"), StepName(step), Action.EXECUTE, 1, not_before)


def test_standard_queue_delays_with_delay_seconds(
    aws_clients: AwsClients, standard_queue: str
) -> None:
    """On a standard queue not_before becomes DelaySeconds: SQS itself holds the message back."""
    queue = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue)
    due_at = time.time() + 1

    queue.enqueue(messages=[message(not_before=due_at)])

    attributes = aws_clients.sqs.get_queue_attributes(
        QueueUrl=standard_queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert queue.lease_due(now=time.time(), limit=10, lease_seconds=30) == []
    time.sleep(max(0.0, due_at - time.time()) + 0.2)
    leased = queue.lease_due(now=time.time(), limit=10, lease_seconds=30)
    assert [(d.message.step, d.delivery_count) for d in leased] == [("s", 1)]


def test_standard_queue_redelays_a_message_received_early(
    aws_clients: AwsClients, standard_queue: str
) -> None:
    """A message visible before its not_before (a delay over 900 s) is sent again, not delivered."""
    # An enqueuing clock 10 s fast sends the message without delay, as a 900 s hop would.
    fast = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue, clock=lambda: time.time() + 10)
    queue = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue)
    due_at = time.time() + 1.5
    fast.enqueue(messages=[message(not_before=due_at)])

    with counting(aws_clients.sqs) as calls:
        early = queue.lease_due(now=time.time(), limit=10, lease_seconds=30)

    assert early == []
    assert calls["SendMessageBatch"] == 1
    assert calls["DeleteMessageBatch"] == 1
    assert queue.pending_count() == 1
    time.sleep(max(0.0, due_at - time.time()) + 0.6)
    leased = queue.lease_due(now=time.time(), limit=10, lease_seconds=30)
    # A fresh copy: the early receive does not count as a delivery (nor for the DLQ).
    assert [(d.message, d.delivery_count) for d in leased] == [(message(not_before=due_at), 1)]


def test_standard_queue_does_not_deduplicate(aws_clients: AwsClients, standard_queue: str) -> None:
    """Standard SQS delivers a duplicate enqueue twice; only a batch's own repeats are dropped."""
    queue = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue)

    queue.enqueue(messages=[message(), message()])
    queue.enqueue(messages=[message()])

    assert queue.pending_count() == 2


def test_unacked_message_moves_to_the_dead_letter_queue(
    aws_clients: AwsClients, standard_queue: str
) -> None:
    """After max_receive_count deliveries without an ack, SQS moves the message to the DLQ."""
    queue = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue)
    queue.enqueue(messages=[message()])

    counts = [
        [d.delivery_count for d in queue.lease_due(now=time.time(), limit=1, lease_seconds=0)]
        for _ in range(3)
    ]

    assert counts == [[1], [2], []]
    dlq_url = standard_queue + "-dlq"
    moved = aws_clients.sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"])["step"] for m in moved.get("Messages", [])] == ["s"]


def test_enqueue_sends_batches_of_ten(aws_clients: AwsClients, standard_queue: str) -> None:
    """25 messages take three SendMessageBatch calls; a lease of 25 takes three receives."""
    queue = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue)

    with counting(aws_clients.sqs) as send_calls:
        queue.enqueue(messages=[message(f"s{i}") for i in range(25)])
    with counting(aws_clients.sqs) as lease_calls:
        leased = queue.lease_due(now=time.time(), limit=25, lease_seconds=30)
    with counting(aws_clients.sqs) as ack_calls:
        queue.ack(receipts=[d.receipt for d in leased])

    assert send_calls == {"SendMessageBatch": 3}
    assert len(leased) == 25
    assert lease_calls == {"ReceiveMessage": 3}
    assert ack_calls == {"DeleteMessageBatch": 3}
    assert queue.pending_count() == 0


def test_fifo_queue_refuses_delays_beyond_its_visibility_limit(aws_clients: AwsClients) -> None:
    """A FIFO queue cannot hold a message back more than 12 h: refused before anything is sent."""
    created = create_queue(aws_clients.sqs, name=unique_name("relay-fifo"), is_fifo=True)
    queue = SqsTaskQueue(aws_clients.sqs, queue_url=created.queue_url)
    try:
        with pytest.raises(ConfigurationError, match="FIFO"):
            queue.enqueue(messages=[message("now"), message("later", not_before=time.time() + DAY)])
        assert queue.pending_count() == 0
        assert queue.is_fifo
    finally:
        aws_clients.sqs.delete_queue(QueueUrl=created.queue_url)
        aws_clients.sqs.delete_queue(QueueUrl=created.dead_letter_queue_url)


# -- S3 ------------------------------------------------------------------------------------


@pytest.fixture
def bucket(aws_clients: AwsClients) -> Iterator[str]:
    name = unique_name("relay-results")
    aws_clients.s3.create_bucket(Bucket=name)
    yield name
    delete_bucket(aws_clients, name)


def test_s3_layout_and_calls(aws_clients: AwsClients, bucket: str) -> None:
    """Results live at <prefix><run>/<step>/<id>.json with an s3:// reference; load is one GET."""
    io = S3IOManager(aws_clients.s3, bucket=bucket, prefix="relay/")

    with counting(aws_clients.s3) as save_calls:
        ref = io.save(run_id="r-1", step="s", result_id="0", value={"a": 1})
    with counting(aws_clients.s3) as load_calls:
        assert io.load(run_id="r-1", step="s", result_id="0") == {"a": 1}

    assert ref == f"s3://{bucket}/relay/r-1/s/0.json"
    body = aws_clients.s3.get_object(Bucket=bucket, Key="relay/r-1/s/0.json")["Body"]
    with contextlib.closing(body):
        assert body.read() == b'{"a":1}'
    assert save_calls == {"HeadObject": 1, "DeleteObjects": 1, "PutObject": 1}
    assert load_calls == {"GetObject": 1}
    assert io.describe()["bucket"] == bucket


def test_s3_missing_bucket_is_a_configuration_error(aws_clients: AwsClients) -> None:
    """A wrong bucket name is reported as configuration, naming the bucket."""
    io = S3IOManager(aws_clients.s3, bucket=unique_name("missing"))

    with pytest.raises(ConfigurationError, match="missing-"):
        io.save(run_id="r-1", step="s", result_id="0", value=1)


def test_s3_marks_a_finished_run_with_the_lifecycle_tag(
    aws_clients: AwsClients, bucket: str
) -> None:
    """Each object of the run is rewritten with the retention tag, its metadata and type kept."""
    io = S3IOManager(aws_clients.s3, bucket=bucket, prefix="relay/")
    io.save(run_id="r-1", step="s", result_id="0", value={"a": 1})
    io.save(run_id="r-2", step="s", result_id="0", value=0)
    before = aws_clients.s3.head_object(Bucket=bucket, Key="relay/r-1/s/0.json")

    assert io.mark_run_finished(run_id="r-1", finished_at=T0) == 1
    with counting(aws_clients.s3) as again:
        assert io.mark_run_finished(run_id="r-1", finished_at=T0) == 1

    head = aws_clients.s3.head_object(Bucket=bucket, Key="relay/r-1/s/0.json")
    assert head["Metadata"] == {**before["Metadata"], "relay-finished-at": str(int(T0))}
    assert head["ContentType"] == "application/json"
    tags = aws_clients.s3.get_object_tagging(Bucket=bucket, Key="relay/r-1/s/0.json")["TagSet"]
    assert tags == [{"Key": "relay-retention", "Value": "finished"}]
    assert (
        aws_clients.s3.get_object_tagging(Bucket=bucket, Key="relay/r-2/s/0.json")["TagSet"] == []
    )
    assert again == {"ListObjectsV2": 1, "HeadObject": 1}  # already marked: no copy
