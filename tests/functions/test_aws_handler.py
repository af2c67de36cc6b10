"""The Lambda entry point (functions/aws.py) driven with golden events against moto server."""

from __future__ import annotations

import copy
import gc
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.domain.records import Message, RunId, StateChange, StepName
from core.domain.status import Action
from functions import aws as lambda_entry
from functions import logs, wiring
from tests.support.aws import REGION
from tests.support.aws_stack import CONTEXT, AwsStack, configure_aws_env, golden
from tests.support.entry_points import STEP_CALLS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def greet_lambda(aws_stack: AwsStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AwsStack:
    """The Lambda configured like a deployment serving the test saga ``greet``."""
    monkeypatch.setenv("RELAY_SAGA_MODULES", "greet=tests.support.entry_points:greet")
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path / "relay-data", sagas="greet")
    return aws_stack


def start_greeting(name: str = "Ada", key: str = "greet-ada-0001") -> dict[str, Any]:
    """POST the golden API Gateway v2 start event (with ``name`` and ``key``)."""
    event = golden("apigw_v2_start")
    event["body"] = json.dumps({"name": name, "times": 2})
    event["headers"]["content-length"] = str(len(event["body"]))
    event["headers"]["idempotency-key"] = key
    response: dict[str, Any] = lambda_entry.handler(event, CONTEXT)
    return response


def receive_all(stack: AwsStack) -> list[dict[str, Any]]:
    """Every message visible on the step queue now, as SQS's ReceiveMessage returns them."""
    received = stack.clients.sqs.receive_message(
        QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", [])
    return [dict(message) for message in received]


def sqs_event(stack: AwsStack, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The Lambda SQS event for ``messages``, shaped after the golden batch record."""
    template = golden("sqs_batch")["Records"][0]
    records = []
    for message in messages:
        record = copy.deepcopy(template)
        record["messageId"] = message["MessageId"]
        record["receiptHandle"] = message["ReceiptHandle"]
        record["body"] = message["Body"]
        record["eventSourceARN"] = f"arn:aws:sqs:{REGION}:123456789012:relay-steps"
        records.append(record)
    return {"Records": records}


def test_api_gateway_v2_post_starts_a_run(greet_lambda: AwsStack) -> None:
    """The golden HTTP API v2 POST answers 202 with the run, whose first step is queued."""
    response = start_greeting()

    body = json.loads(response["body"])
    assert response["statusCode"] == 202
    assert body["created"] is True
    assert response["headers"]["location"] == f"/v1/runs/{body['run_id']}"
    queued = [json.loads(m["Body"]) for m in receive_all(greet_lambda)]
    assert [(m["run_id"], m["step"]) for m in queued] == [(body["run_id"], "write_text")]


def test_function_url_get_reads_the_run(greet_lambda: AwsStack) -> None:
    """The golden Function URL GET answers 200 with the run and its steps in order."""
    run_id = json.loads(start_greeting()["body"])["run_id"]
    event = golden("function_url_get_run")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/runs/{run_id}"

    response = lambda_entry.handler(event, CONTEXT)

    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert body["run_id"] == run_id
    assert [step["name"] for step in body["steps"]] == ["write_text", "deliver"]


def test_delivery_routes_are_not_served_over_http(greet_lambda: AwsStack) -> None:
    """On Lambda, /v1/steps over HTTP is 404: SQS invokes the handler directly."""
    event = golden("apigw_v2_start")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/steps"

    assert lambda_entry.handler(event, CONTEXT)["statusCode"] == 404


def test_unknown_event_shape_names_the_shapes_tried() -> None:
    """An event of no known shape raises an error listing its keys and every shape tried."""
    with pytest.raises(lambda_entry.UnknownEventShapeError) as caught:
        lambda_entry.handler({"hello": "world"}, CONTEXT)

    message = str(caught.value)
    assert "hello" in message
    for shape in ("SQS batch", "scheduler invocation", "EventBridge", "SNS", "HTTP"):
        assert shape in message


def test_scheduled_invocation_twice_starts_one_run(greet_lambda: AwsStack) -> None:
    """The same scheduled time delivered twice (scheduler retry) finds the same run."""
    first = lambda_entry.handler(golden("scheduler_invocation"), CONTEXT)
    second = lambda_entry.handler(golden("scheduler_invocation"), CONTEXT)
    later = golden("scheduler_invocation") | {"scheduled_time": "2026-11-23T03:00:00Z"}
    third = lambda_entry.handler(later, CONTEXT)

    assert first["created"] is True
    assert second == first | {"created": False}
    assert third["run_id"] != first["run_id"]
    assert len(wiring.get_engine().runs.list(saga="greet")) == 2


def test_unknown_schedule_is_acknowledged_not_retried(greet_lambda: AwsStack) -> None:
    """A scheduler Input naming no declared schedule is logged and answered, not raised."""
    event = golden("scheduler_invocation") | {"schedule": "no-such-schedule"}

    outcome = lambda_entry.handler(event, CONTEXT)

    assert outcome["status"] == "rejected"
    assert "nightly-greeting" in outcome["error"]


def test_eventbridge_event_starts_a_subscribed_run(greet_lambda: AwsStack) -> None:
    """An EventBridge event whose detail-type matches ``people.*.joined`` starts one run."""
    first = lambda_entry.handler(golden("eventbridge_event"), CONTEXT)
    again = lambda_entry.handler(golden("eventbridge_event"), CONTEXT)

    assert len(first["runs"]) == 1
    assert again["runs"] == first["runs"]  # the event id makes the start idempotent
    run = wiring.get_engine().runs.get(first["runs"][0]).run
    assert run.saga == "greet"


def test_sns_notification_starts_a_subscribed_run(greet_lambda: AwsStack) -> None:
    """An SNS record with a ``topic`` attribute starts a run with the JSON message as data."""
    outcome = lambda_entry.handler(golden("sns_event"), CONTEXT)

    assert len(outcome["runs"]) == 1
    assert outcome["rejected"] == {}


OVER_AN_ITEM = "x" * 1_000_000
"""A name that makes the run's input about 1 MiB: under the HTTP body limit, over the
400 KB of a DynamoDB item, so the input must go to S3."""


def test_an_input_over_a_dynamodb_item_is_offloaded_and_runs(greet_lambda: AwsStack) -> None:
    """A ~1 MiB input is kept in S3, the run record holds a reference, and steps see it."""
    response = start_greeting(name=OVER_AN_ITEM, key="greet-large-0001")

    assert response["statusCode"] == 202, response["body"]
    run_id = json.loads(response["body"])["run_id"]
    stored = wiring.get_engine().runs.get(run_id).run.input
    assert stored["$ref"].startswith(f"s3://{greet_lambda.bucket}/{run_id}/$input/input-")
    assert stored["bytes"] > 1_000_000
    keys = greet_lambda.clients.s3.list_objects_v2(Bucket=greet_lambda.bucket, Prefix=run_id)
    assert [o["Key"].split("/")[1] for o in keys["Contents"]] == ["$input"]

    for _ in range(2):  # write_text, then deliver, each a real SQS batch
        (message,) = receive_all(greet_lambda)
        assert lambda_entry.handler(sqs_event(greet_lambda, [message]), CONTEXT) == {
            "batchItemFailures": []
        }

    event = golden("function_url_get_run")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/runs/{run_id}"
    view = json.loads(lambda_entry.handler(event, CONTEXT)["body"])
    assert view["status"] == "COMPLETED"
    assert view["input"] == {"name": OVER_AN_ITEM, "times": 2}
    assert STEP_CALLS["write_text"] == STEP_CALLS["deliver"] == 1


def test_a_repeated_start_with_other_large_input_is_refused(greet_lambda: AwsStack) -> None:
    """Reusing a key with another offloaded input is a 409 and leaves the run's input intact."""
    first = start_greeting(name=OVER_AN_ITEM, key="greet-large-0002")
    again = start_greeting(name=OVER_AN_ITEM, key="greet-large-0002")
    other = start_greeting(name="y" * 1_000_000, key="greet-large-0002")

    run_id = json.loads(first["body"])["run_id"]
    assert (first["statusCode"], again["statusCode"], other["statusCode"]) == (202, 202, 409)
    assert json.loads(again["body"])["run_id"] == run_id
    assert json.loads(again["body"])["created"] is False
    engine = wiring.get_engine()
    resolved = engine.runs.resolved(engine.runs.get(run_id)).run.input
    assert resolved == {"name": OVER_AN_ITEM, "times": 2}


def test_an_event_with_a_large_input_starts_its_run(greet_lambda: AwsStack) -> None:
    """An event whose run input exceeds a DynamoDB item starts the run, its input in S3."""
    event = golden("eventbridge_event")
    event["detail"]["name"] = OVER_AN_ITEM

    outcome = lambda_entry.handler(event, CONTEXT)

    assert outcome["rejected"] == {}
    (run_id,) = outcome["runs"]
    engine = wiring.get_engine()
    assert engine.runs.get(run_id).run.input["$ref"].startswith("s3://")
    assert engine.runs.resolved(engine.runs.get(run_id)).run.input["name"] == OVER_AN_ITEM


class Captured(logging.Handler):
    """Keeps the records of one logger (the handler reconfigures the root logger)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def aws_log() -> Iterator[Captured]:
    """What ``functions.aws`` logs during the test."""
    captured = Captured()
    logger = logging.getLogger("relay.aws")
    logger.addHandler(captured)
    yield captured
    logger.removeHandler(captured)


def test_sqs_batch_reports_exactly_its_poison_messages(
    greet_lambda: AwsStack, aws_log: Captured
) -> None:
    """Undecodable bodies are reported (for the DLQ) and logged without the body; the rest runs."""
    start_greeting()
    (good,) = receive_all(greet_lambda)
    secret = "card=4111111111111111"
    poison = {"MessageId": "poison-1", "ReceiptHandle": "poison-handle", "Body": "{" + secret}
    unknown = {
        "MessageId": "poison-2",
        "ReceiptHandle": "h2",
        "Body": json.dumps({"run_id": "r-1", "note": secret}),
    }

    response = lambda_entry.handler(sqs_event(greet_lambda, [poison, good, unknown]), CONTEXT)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "poison-1"}, {"itemIdentifier": "poison-2"}]
    }
    assert STEP_CALLS["write_text"] == 1
    poison_logs = [r for r in aws_log.records if "poison SQS message" in r.getMessage()]
    assert [r.sqs_message_id for r in poison_logs] == ["poison-1", "poison-2"]  # type: ignore[attr-defined]
    assert [r.size_bytes for r in poison_logs] == [  # type: ignore[attr-defined]
        len(poison["Body"]),
        len(unknown["Body"]),
    ]
    assert "not JSON" in poison_logs[0].getMessage()
    assert "missing field 'step'" in poison_logs[1].getMessage()
    assert all(secret not in r.getMessage() for r in aws_log.records)


def test_sqs_batch_reports_a_permanently_rejected_message(
    greet_lambda: AwsStack, aws_log: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permanent engine error (here: a misconfigured deployment) reports, never drops, it."""
    start_greeting()
    (good,) = receive_all(greet_lambda)
    monkeypatch.delenv("RELAY_SQS_QUEUE_URL")
    wiring.reset_engine()

    response = lambda_entry.handler(sqs_event(greet_lambda, [good]), CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": good["MessageId"]}]}
    assert STEP_CALLS["write_text"] == 0
    (logged,) = [r for r in aws_log.records if "permanent error" in r.getMessage()]
    assert "RELAY_SQS_QUEUE_URL" in logged.getMessage()


def test_sqs_batch_reports_a_message_the_engine_defers(greet_lambda: AwsStack) -> None:
    """A step still leased elsewhere is reported, and hidden for the rest of the lease."""
    run_id = json.loads(start_greeting()["body"])["run_id"]
    (good,) = receive_all(greet_lambda)
    store = wiring.get_engine().store
    snapshot = store.load_run(run_id=RunId(run_id))
    assert snapshot is not None
    now = time.time()
    claimed = snapshot.step("write_text").claimed(now=now, lease_until=now + 30, error=None)
    store.apply(change=StateChange(snapshot.run.run_id, steps=(claimed,)))

    response = lambda_entry.handler(sqs_event(greet_lambda, [good]), CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": good["MessageId"]}]}
    assert STEP_CALLS["write_text"] == 0
    assert receive_all(greet_lambda) == []  # hidden for the lease's 30 s, not redelivered now


def test_sqs_batch_holds_back_a_message_not_due_yet(greet_lambda: AwsStack) -> None:
    """A message received before its ``not_before`` is reported and hidden until due."""
    run_id = json.loads(start_greeting()["body"])["run_id"]
    receive_all(greet_lambda)  # the real first message stays in flight
    early = Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1, time.time() + 3600)
    greet_lambda.clients.sqs.send_message(
        QueueUrl=greet_lambda.queue_url, MessageBody=json.dumps(early.to_json())
    )
    (received,) = receive_all(greet_lambda)

    response = lambda_entry.handler(sqs_event(greet_lambda, [received]), CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": received["MessageId"]}]}
    assert STEP_CALLS["write_text"] == 0
    assert receive_all(greet_lambda) == []


def test_scheduler_role_sends_long_delays_through_eventbridge_scheduler(
    greet_lambda: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With RELAY_SCHEDULER_ROLE_ARN, a message due in 2 h becomes a one-time schedule."""
    from infra.aws.scheduler_delay import schedule_name

    role = "arn:aws:iam::123456789012:role/relay-scheduler"
    monkeypatch.setenv("RELAY_SCHEDULER_ROLE_ARN", role)
    wiring.reset_engine()
    run_id = json.loads(start_greeting()["body"])["run_id"]
    later = Message(RunId(run_id), StepName("deliver"), Action.EXECUTE, 2, time.time() + 7200)

    wiring.get_engine().queue.enqueue(messages=[later])

    import boto3

    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("scheduler", endpoint_url=greet_lambda.clients.endpoint_url)
    try:
        schedule = client.get_schedule(Name=schedule_name(later.message_id))
        assert schedule["Target"]["RoleArn"] == role
        assert json.loads(schedule["Target"]["Input"]) == later.to_json()
        assert len(receive_all(greet_lambda)) == 1  # only the run's first step is on SQS
    finally:
        client.delete_schedule(Name=schedule_name(later.message_id))
        client.close()


def test_first_invocation_warms_up_and_leaves_the_collector_on(
    greet_lambda: AwsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold container builds the engine and app before dispatching; gc is on afterwards."""
    monkeypatch.setattr(lambda_entry, "_is_warm", False)

    response = start_greeting()

    assert response["statusCode"] == 202
    assert lambda_entry._is_warm is True
    assert lambda_entry._http_handler.cache_info().currsize == 1
    assert gc.isenabled()


def test_importing_the_entry_point_builds_nothing_heavy() -> None:
    """``import functions.aws`` loads neither boto3, Mangum, Starlette nor the engine."""
    heavy = ["boto3", "botocore", "mangum", "starlette", "core.engine.engine"]
    code = f"import sys, functions.aws; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_log_lines_of_an_invocation_carry_its_lambda_request_id(greet_lambda: AwsStack) -> None:
    """Every line logged while an invocation runs names its request id; none after it."""
    stream = io.StringIO()
    capture = logs.JsonLinesHandler(stream)
    capture.setFormatter(logs.JsonFormatter(log_format="aws"))
    logging.getLogger().addHandler(capture)
    try:
        context = type("Context", (), {"aws_request_id": "req-7f3a"})()
        lambda_entry.handler(
            {"relay": "schedule", "schedule": "nope", "scheduled_time": "2026-01-01T00:00:00Z"},
            context,
        )
        logging.getLogger("relay.aws").error("after the invocation")
    finally:
        logging.getLogger().removeHandler(capture)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    during = [line for line in lines if "scheduler invocation ignored" in line["message"]]
    after = [line for line in lines if line["message"] == "after the invocation"]
    assert during and all(line["aws_request_id"] == "req-7f3a" for line in during)
    assert after and "aws_request_id" not in after[0]


def test_sweeper_invocation_re_drives_a_run_whose_message_was_lost(greet_lambda: AwsStack) -> None:
    """The sweeper schedule's Input re-enqueues the due message of a stalled run."""
    run_id = wiring.get_engine().runs.start("greet", {"name": "Ada"}).run.run_id
    lost = receive_all(greet_lambda)
    assert [json.loads(m["Body"])["run_id"] for m in lost] == [run_id]
    greet_lambda.clients.sqs.delete_message(
        QueueUrl=greet_lambda.queue_url, ReceiptHandle=lost[0]["ReceiptHandle"]
    )

    answer = lambda_entry.handler({"relay": "sweep", "stale_after_seconds": 0}, CONTEXT)
    bad = lambda_entry.handler({"relay": "sweep", "stale_after_seconds": "soon"}, CONTEXT)

    assert (answer["redriven"], answer["messages"], answer["stale_after_seconds"]) == (1, 1, 0.0)
    assert [json.loads(m["Body"])["run_id"] for m in receive_all(greet_lambda)] == [run_id]
    assert bad["status"] == "rejected" and "stale_after_seconds" in bad["error"]
