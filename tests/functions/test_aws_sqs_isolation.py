"""Every SQS record is isolated: one record's failure of any kind is its own (issue 10).

The audit's finding: one SQS body of deeply nested ``[`` raised RecursionError and failed its
whole batch, pushing good messages toward the dead-letter queue. Here crafted records (nested,
huge, unicode, NUL, wrong shapes, records that are not records, an engine that blows up) each
sit in a batch beside a real step message from moto server's queue: the crafted record alone
is reported (or, when it cannot be named, acknowledged and logged as dropped) and the real one
runs. A real poison body then goes through the real queue to its dead-letter queue.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.domain.records import Message
from functions import aws as lambda_entry
from functions import wiring
from tests.support.aws import REGION
from tests.support.aws_stack import CONTEXT, AwsStack, configure_aws_env, golden
from tests.support.entry_points import STEP_CALLS

MESSAGE = {"format": 2, "run_id": "r-1", "step": "write_text", "action": "execute", "saga": "greet"}


@pytest.fixture
def greet_lambda(aws_stack: AwsStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AwsStack:
    """The Lambda configured like a deployment serving the test saga ``greet``."""
    monkeypatch.setenv("RELAY_SAGA_MODULES", "greet=tests.support.entry_points:greet")
    configure_aws_env(monkeypatch, aws_stack, data_dir=tmp_path / "relay-data", sagas="greet")
    return aws_stack


class Captured(logging.Handler):
    """Keeps the records of the ``relay.aws`` logger."""

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


def start_greeting(key: str) -> str:
    """Start a greet run through the golden API Gateway event; its run id."""
    event = golden("apigw_v2_start")
    event["body"] = json.dumps({"name": "Ada", "times": 2})
    event["headers"]["content-length"] = str(len(event["body"]))
    event["headers"]["idempotency-key"] = key
    response = lambda_entry.handler(event, CONTEXT)
    assert response["statusCode"] == 202, response
    run_id: str = json.loads(response["body"])["run_id"]
    return run_id


def receive_all(stack: AwsStack) -> list[dict[str, Any]]:
    """Every message visible on the step queue now."""
    received = stack.clients.sqs.receive_message(
        QueueUrl=stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", [])
    return [dict(message) for message in received]


def sqs_record(message_id: object, body: object, receipt: object = "handle") -> dict[str, Any]:
    """An SQS record shaped after the golden batch record."""
    record: dict[str, Any] = copy.deepcopy(golden("sqs_batch")["Records"][0])
    record["messageId"] = message_id
    record["receiptHandle"] = receipt
    record["body"] = body
    record["eventSourceARN"] = f"arn:aws:sqs:{REGION}:123456789012:relay-steps"
    return record


def real_record(stack: AwsStack) -> dict[str, Any]:
    """The record of the one real step message on the queue (a run started just before)."""
    (message,) = receive_all(stack)
    return sqs_record(message["MessageId"], message["Body"], message["ReceiptHandle"])


def step_body(**fields: Any) -> str:
    return json.dumps({**MESSAGE, "attempt": 1, **fields})


NESTED = 100_000
POISON_BODIES: dict[str, object] = {
    "nested-lists": "[" * NESTED,
    "nested-objects": '{"a":' * NESTED,
    "nested-closed": "[" * NESTED + "]" * NESTED,
    "nested-in-a-field": '{"run_id": ' + "[" * NESTED + "]" * NESTED + "}",
    "empty": "",
    "whitespace": " \n\t ",
    "nul": "\x00",
    "nul-in-json": '{"run_id": "r-1\x00"\x00}',
    "lone-surrogate": "\ud800",
    "huge-text": "x" * 1_000_000,
    "huge-unicode": "😀" * 200_000,
    "rtl-and-combining": "\u202e\u0301{}",
    "json-list": "[]",
    "json-number": "1",
    "json-null": "null",
    "json-string": '"step"',
    "nan": step_body().replace('"attempt": 1', '"attempt": NaN'),
    "infinity-not-before": step_body().rstrip("}") + ', "not_before": Infinity}',
    "int-over-digit-limit": step_body().replace('"attempt": 1', '"attempt": ' + "9" * 5000),
    "float-attempt": step_body(attempt=1e300),
    "negative-attempt": step_body(attempt=-1),
    "bool-attempt": step_body(attempt=True),
    "unknown-action": step_body(action="explode"),
    "nested-action": json.dumps({**MESSAGE, "attempt": 1, "action": [[[[["x"]]]]]}),
    "future-format": step_body(format=99),
    "missing-fields": json.dumps({"run_id": "r-1"}),
    "not-a-string-body": 42,
    "object-body": {"run_id": "r-1"},
    "null-body": None,
}


@pytest.mark.parametrize("body", POISON_BODIES.values(), ids=POISON_BODIES.keys())
def test_a_poison_record_is_reported_alone_and_its_batch_runs(
    greet_lambda: AwsStack, aws_log: Captured, body: object
) -> None:
    """Beside a real step message, a crafted body is reported for the DLQ; the step runs."""
    start_greeting("isolation-1")
    good = real_record(greet_lambda)
    poison = sqs_record("poison-1", body)

    response = lambda_entry.handler({"Records": [poison, good, copy.deepcopy(poison)]}, CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": "poison-1"}]}
    assert STEP_CALLS["write_text"] == 1
    logged = [r for r in aws_log.records if r.levelno >= logging.ERROR]
    assert logged and all(r.exc_info is None for r in logged)  # no traceback for junk
    assert all(len(r.getMessage()) < 1_000 for r in logged)  # never the body


UNREPORTABLE: dict[str, object] = {
    "string-record": "not a record",
    "number-record": 42,
    "null-record": None,
    "list-record": [{"messageId": "x"}],
    "missing-message-id": {k: v for k, v in sqs_record("x", "[").items() if k != "messageId"},
    "empty-message-id": sqs_record("", "["),
    "numeric-message-id": sqs_record(7, "["),
}


@pytest.mark.parametrize("record", UNREPORTABLE.values(), ids=UNREPORTABLE.keys())
def test_a_record_that_cannot_be_named_is_dropped_and_logged_not_the_batch(
    greet_lambda: AwsStack, aws_log: Captured, record: object
) -> None:
    """An identifier Lambda does not know would fail the whole batch: it is acknowledged."""
    start_greeting("isolation-2")
    good = real_record(greet_lambda)

    response = lambda_entry.handler({"Records": [good, record]}, CONTEXT)

    assert response == {"batchItemFailures": []}
    assert STEP_CALLS["write_text"] == 1
    assert any("dropped (acknowledged)" in r.getMessage() for r in aws_log.records)


def test_a_record_that_fails_while_held_back_is_reported_alone(greet_lambda: AwsStack) -> None:
    """A future message with no receipt handle cannot be delayed; it alone is reported."""
    start_greeting("isolation-3")
    good = real_record(greet_lambda)
    early = sqs_record("early-1", step_body(not_before=1e308))
    del early["receiptHandle"]

    response = lambda_entry.handler({"Records": [early, good]}, CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": "early-1"}]}
    assert STEP_CALLS["write_text"] == 1


class ExplodingEngine:
    """The real engine, except that the run ``r-boom`` makes ``handle`` raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        self._engine = wiring.get_engine()
        self._error = error

    def handle(self, message: Message) -> Any:
        if message.run_id == "r-boom":
            raise self._error
        return self._engine.handle(message)


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("maximum recursion depth exceeded"),
        KeyError("x"),
        MemoryError(),
        ValueError(),
    ],
    ids=["recursion", "key-error", "memory", "value-error"],
)
def test_an_engine_failure_of_any_kind_is_that_records_alone(
    greet_lambda: AwsStack, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """Whatever the engine raises for one message, the others are processed."""
    start_greeting("isolation-4")
    good = real_record(greet_lambda)
    exploding = ExplodingEngine(error)
    monkeypatch.setattr(lambda_entry, "_engine", lambda: exploding)
    boom = sqs_record("boom-1", step_body(run_id="r-boom"))

    response = lambda_entry.handler({"Records": [boom, good]}, CONTEXT)

    assert response == {"batchItemFailures": [{"itemIdentifier": "boom-1"}]}
    assert STEP_CALLS["write_text"] == 1


def test_odd_but_valid_messages_never_fail_their_batch(greet_lambda: AwsStack) -> None:
    """Unknown runs with unicode, NUL and long ids are settled one by one; the real one runs."""
    start_greeting("isolation-5")
    good = real_record(greet_lambda)
    odd = [
        sqs_record("odd-unicode", step_body(run_id="r-ünï😀")),
        sqs_record("odd-nul", step_body(run_id="r-\x00", step="\x00")),
        sqs_record("odd-rtl", step_body(run_id="r-\u202e", step="write_text")),
        sqs_record("odd-long", step_body(run_id="r-" + "9" * 2000)),
        sqs_record("odd-no-saga", step_body(saga=None)),
    ]

    response = lambda_entry.handler({"Records": [*odd, good]}, CONTEXT)

    reported = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    assert reported <= {record["messageId"] for record in odd}
    assert STEP_CALLS["write_text"] == 1


def test_a_batch_of_every_kind_of_junk_reports_exactly_the_junk(greet_lambda: AwsStack) -> None:
    """One batch holding all the crafted records and a real one: one answer, per record."""
    start_greeting("isolation-6")
    good = real_record(greet_lambda)
    junk = [sqs_record(f"junk-{name}", body) for name, body in POISON_BODIES.items()]

    response = lambda_entry.handler({"Records": [*junk, *UNREPORTABLE.values(), good]}, CONTEXT)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": record["messageId"]} for record in junk]
    }
    assert STEP_CALLS["write_text"] == 1


REAL_POISON = {
    "nested": "[" * NESTED,
    "not-json": "{card=4111111111111111",
    "json-list": "[1, 2, 3]",
    "nan": step_body().replace('"attempt": 1', '"attempt": NaN'),
    "unicode": "😀" * 1000,
}


def test_real_poison_goes_to_the_dead_letter_queue_and_good_messages_do_not(
    greet_lambda: AwsStack,
) -> None:
    """On moto server's queue, as Lambda's event source mapping would drive it, the poison
    bodies end in the DLQ after maxReceiveCount receives; the real step runs once and its
    message is deleted."""
    sqs = greet_lambda.clients.sqs
    start_greeting("isolation-7")
    for body in REAL_POISON.values():
        sqs.send_message(QueueUrl=greet_lambda.queue_url, MessageBody=body)

    for _ in range(20):  # receives, as the event source mapping would poll
        messages = receive_all(greet_lambda)
        if not messages:
            break
        event = {
            "Records": [sqs_record(m["MessageId"], m["Body"], m["ReceiptHandle"]) for m in messages]
        }
        response = lambda_entry.handler(event, CONTEXT)
        reported = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for message in messages:  # what Lambda does with a partial batch response
            if message["MessageId"] in reported:
                sqs.change_message_visibility(
                    QueueUrl=greet_lambda.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
            else:
                sqs.delete_message(
                    QueueUrl=greet_lambda.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    dead = sqs.receive_message(
        QueueUrl=greet_lambda.dead_letter_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", [])
    assert sorted(m["Body"] for m in dead) == sorted(REAL_POISON.values())
    assert STEP_CALLS["write_text"] >= 1  # the run went on (its later steps need no poison)
    assert receive_all(greet_lambda) == []


def test_sns_records_of_the_wrong_shape_are_refused_one_by_one(greet_lambda: AwsStack) -> None:
    """Junk SNS records (nested message, missing fields, not a record) never stop the good one."""
    good = golden("sns_event")["Records"][0]
    nested = copy.deepcopy(good)
    nested["Sns"]["Message"] = "[" * NESTED
    nested["Sns"]["MessageId"] = "sns-nested"
    broken = {"EventSource": "aws:sns", "Sns": {"MessageAttributes": ["x"], "Message": 7}}

    outcome = lambda_entry.handler({"Records": [nested, good, broken, "junk"]}, CONTEXT)

    assert len(outcome["runs"]) == 1  # the good record; the nested one's data is not an input
    assert set(outcome["rejected"]) == {"greet", "?"}
