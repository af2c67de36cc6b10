"""Delays past SQS's 900 s as EventBridge Scheduler one-time schedules, on moto server.

moto stores schedules but never fires them; a test fires one as Scheduler would, by
sending the schedule's ``Input`` to its target queue (with its FIFO message group).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from core.domain.records import Message, RunId, StepName
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga
from core.domain.status import Action, RunStatus, StepStatus
from core.engine.engine import Engine
from core.ports.clock import FixedClock
from core.registry import SagaRegistry
from infra.aws.dynamodb import DynamoDBStateStore, create_table
from infra.aws.scheduler_delay import EventBridgeSchedulerDelay, at_expression, schedule_name
from infra.aws.sqs import SqsTaskQueue, create_queue
from tests.support.aws import REGION, AwsClients, counting, unique_name

ROLE_ARN = "arn:aws:iam::123456789012:role/relay-scheduler"
HOUR = 3600.0


class SchedulerClients:
    """A factory of scheduler clients on moto that counts how often it was asked."""

    def __init__(self, aws: AwsClients) -> None:
        import boto3

        self.built = 0
        self.client: Any = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        ).client("scheduler", endpoint_url=aws.endpoint_url)

    def __call__(self) -> Any:
        self.built += 1
        return self.client

    def schedules(self) -> list[str]:
        """Names of the schedules in the default group."""
        listed = self.client.list_schedules(GroupName="default")["Schedules"]
        return sorted(str(item["Name"]) for item in listed)

    def fire(self, aws: AwsClients, name: str, queue_url: str) -> None:
        """Do what Scheduler does at the schedule's time: send its Input, then delete it."""
        target = self.client.get_schedule(Name=name)["Target"]
        send: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": target["Input"]}
        if "SqsParameters" in target:
            send["MessageGroupId"] = target["SqsParameters"]["MessageGroupId"]
        aws.sqs.send_message(**send)
        self.client.delete_schedule(Name=name)  # ActionAfterCompletion DELETE


@pytest.fixture
def scheduler(aws_clients: AwsClients) -> Iterator[SchedulerClients]:
    clients = SchedulerClients(aws_clients)
    yield clients
    for name in clients.schedules():
        clients.client.delete_schedule(Name=name)
    clients.client.close()


def make_queue(aws: AwsClients, *, is_fifo: bool) -> Iterator[str]:
    created = create_queue(aws.sqs, name=unique_name("relay-long"), is_fifo=is_fifo)
    yield created.queue_url
    aws.sqs.delete_queue(QueueUrl=created.queue_url)
    aws.sqs.delete_queue(QueueUrl=created.dead_letter_queue_url)


@pytest.fixture
def standard_queue(aws_clients: AwsClients) -> Iterator[str]:
    yield from make_queue(aws_clients, is_fifo=False)


@pytest.fixture
def fifo_queue(aws_clients: AwsClients) -> Iterator[str]:
    yield from make_queue(aws_clients, is_fifo=True)


def queue_arn(aws: AwsClients, url: str) -> str:
    attributes = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def long_queue(
    aws: AwsClients, url: str, scheduler: SchedulerClients, now: float | None = None
) -> SqsTaskQueue:
    delays = EventBridgeSchedulerDelay(scheduler, role_arn=ROLE_ARN)
    clock = time.time if now is None else (lambda: now)
    return SqsTaskQueue(aws.sqs, queue_url=url, clock=clock, long_delays=delays)


def sleeper(due_in_seconds: float, now: float, step: str = "wake") -> Message:
    return Message(RunId("r-long"), StepName(step), Action.EXECUTE, 2, now + due_in_seconds)


def test_long_delay_becomes_a_one_time_schedule(
    aws_clients: AwsClients, standard_queue: str, scheduler: SchedulerClients
) -> None:
    """A message due in 2 h is a schedule: at() in UTC, no flex window, deleted after firing."""
    now = time.time()
    queue = long_queue(aws_clients, standard_queue, scheduler, now)
    message = sleeper(2 * HOUR + 0.25, now)

    queue.enqueue(messages=[message])

    schedule = scheduler.client.get_schedule(Name=schedule_name(message.message_id))
    due = datetime.fromtimestamp(math.ceil(now + 2 * HOUR + 0.25), tz=UTC)
    assert schedule["ScheduleExpression"] == f"at({due:%Y-%m-%dT%H:%M:%S})"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["ActionAfterCompletion"] == "DELETE"
    target = schedule["Target"]
    assert target["Arn"] == queue_arn(aws_clients, standard_queue)
    assert target["RoleArn"] == ROLE_ARN
    assert Message.from_json(json.loads(target["Input"])) == message
    assert "SqsParameters" not in target
    dlq_url = standard_queue + "-dlq"
    assert target["DeadLetterConfig"] == {"Arn": queue_arn(aws_clients, dlq_url)}
    assert queue.pending_count() == 0  # nothing waits on SQS: no hops, no receives


def test_schedule_name_fits_the_scheduler_rules() -> None:
    """Names are 64 characters of [0-9a-f-], the same for the same id, different otherwise."""
    name = schedule_name("r-1/charge_card/execute/3")

    assert len(name) == 64
    assert set(name) <= set("relay-0123456789abcdef")
    assert schedule_name("r-1/charge_card/execute/3") == name
    assert schedule_name("r-1/charge_card/execute/4") != name
    assert at_expression(1_800_000_000.0) == "at(2027-01-15T08:00:00)"
    assert at_expression(1_800_000_000.2) == "at(2027-01-15T08:00:01)"  # never early


def test_duplicate_enqueue_creates_no_second_schedule(
    aws_clients: AwsClients, standard_queue: str, scheduler: SchedulerClients
) -> None:
    """Enqueuing the same message again meets ConflictException, which counts as success."""
    now = time.time()
    queue = long_queue(aws_clients, standard_queue, scheduler, now)
    message = sleeper(HOUR, now)
    queue.enqueue(messages=[message])

    with counting(scheduler.client) as calls:
        queue.enqueue(messages=[message])
        long_queue(aws_clients, standard_queue, scheduler, now).enqueue(messages=[message])

    assert calls == {"CreateSchedule": 2}  # both refused with ConflictException
    assert scheduler.schedules() == [schedule_name(message.message_id)]
    assert queue.pending_count() == 0


def test_short_delays_stay_on_sqs_and_build_no_scheduler_client(
    aws_clients: AwsClients, standard_queue: str, scheduler: SchedulerClients
) -> None:
    """Up to 900 s ahead is DelaySeconds as before; the scheduler client is never built."""
    now = time.time()
    queue = long_queue(aws_clients, standard_queue, scheduler, now)

    queue.enqueue(messages=[sleeper(900, now, "a"), sleeper(0, now, "b")])

    assert scheduler.built == 0
    assert queue.pending_count() == 2
    queue.enqueue(messages=[sleeper(901, now, "c"), sleeper(3 * HOUR, now, "d")])
    assert scheduler.built == 1
    assert len(scheduler.schedules()) == 2
    assert queue.pending_count() == 2


def test_fifo_schedule_names_the_message_group(
    aws_clients: AwsClients, fifo_queue: str, scheduler: SchedulerClients
) -> None:
    """On FIFO the target carries the message's group; a day ahead is no longer refused."""
    now = time.time()
    queue = long_queue(aws_clients, fifo_queue, scheduler, now)
    message = sleeper(24 * HOUR, now)

    queue.enqueue(messages=[message])

    name = schedule_name(message.message_id)
    target = scheduler.client.get_schedule(Name=name)["Target"]
    assert target["Arn"] == queue_arn(aws_clients, fifo_queue)
    assert len(target["SqsParameters"]["MessageGroupId"]) == 64
    scheduler.fire(aws_clients, name, fifo_queue)  # FIFO content-based dedup accepts it
    leased = queue.lease_due(now=now + 24 * HOUR + 1, limit=10, lease_seconds=30)
    assert [d.message for d in leased] == [message]


def test_message_received_far_too_early_waits_on_the_scheduler(
    aws_clients: AwsClients, standard_queue: str, scheduler: SchedulerClients
) -> None:
    """A message an unscheduled sender put on SQS, due in an hour, becomes a schedule, not a hop."""
    now = time.time()
    plain = SqsTaskQueue(aws_clients.sqs, queue_url=standard_queue, clock=lambda: now + HOUR)
    message = sleeper(HOUR, now)
    plain.enqueue(messages=[message])  # its clock says "due": sent without delay
    queue = long_queue(aws_clients, standard_queue, scheduler, now)

    assert queue.lease_due(now=now, limit=10, lease_seconds=30) == []

    assert scheduler.schedules() == [schedule_name(message.message_id)]
    assert queue.pending_count() == 0


def test_run_sleeping_past_fifteen_minutes_resumes_when_its_schedule_fires(
    aws_clients: AwsClients, standard_queue: str, scheduler: SchedulerClients
) -> None:
    """A step retried an hour later waits on a schedule; once it fires, the worker ends the run."""
    calls: list[float] = []
    clock = FixedClock(start=time.time())

    def flaky(ctx: object) -> str:
        calls.append(clock.now())
        if len(calls) == 1:
            raise RuntimeError("supplier offline")
        return "delivered"

    saga = Saga("patient")
    saga.step(
        flaky,
        name="deliver",
        retry=RetryPolicy(
            max_attempts=2, initial_delay_seconds=HOUR, max_delay_seconds=HOUR, jitter=0.0
        ),
    )
    table = unique_name("relay-state")
    create_table(aws_clients.dynamodb, table_name=table)
    queue = SqsTaskQueue(
        aws_clients.sqs,
        queue_url=standard_queue,
        clock=clock.now,
        long_delays=EventBridgeSchedulerDelay(scheduler, role_arn=ROLE_ARN),
    )
    engine = Engine(
        registry=SagaRegistry({"patient": saga}),
        store=DynamoDBStateStore(aws_clients.dynamodb, table_name=table),
        queue=queue,
        clock=clock,
    )
    try:
        run_id = engine.runs.start("patient", {}).run.run_id

        def work() -> int:
            leased = queue.lease_due(now=clock.now(), limit=10, lease_seconds=30)
            for delivery in leased:
                assert engine.handle(delivery.message).is_done
            queue.ack(receipts=[d.receipt for d in leased])
            return len(leased)

        assert work() == 1  # attempt 1 fails; attempt 2 is due in an hour
        (name,) = scheduler.schedules()
        assert queue.pending_count() == 0
        assert work() == 0
        clock.advance(HOUR + 1)
        scheduler.fire(aws_clients, name, standard_queue)
        assert work() == 1

        snapshot = engine.runs.get(run_id)
        assert snapshot.run.status is RunStatus.COMPLETED
        assert snapshot.step("deliver").status is StepStatus.SUCCEEDED
        assert snapshot.step("deliver").attempt == 2
        assert calls[1] - calls[0] >= HOUR
        assert scheduler.schedules() == []
    finally:
        engine.close()
        aws_clients.dynamodb.delete_table(TableName=table)
