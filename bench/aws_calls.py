"""DynamoDB and SQS API calls per step transition on the AWS stack, counted on moto server.

N order-saga runs (``functions/sagas/order.py``; the demo inputs, so some compensate) are
started through Mangum with API Gateway v2 events and driven to the end by a poller that
stands in for Lambda's SQS event source mapping: it receives real batches from moto and
invokes ``functions.aws.handler`` with Lambda's SQS event, then deletes what the partial
batch response did not report. Every API call is counted by a botocore ``before-call``
hook on the clients' own event systems (nothing is stubbed): the function's calls
(state store, step queue, visibility changes) apart from the poller's.

A step transition is one claimed attempt of a step (execute or compensate): the sum of
the step records' ``attempt`` counters at the end. The budget it is compared with is
DESIGN.md's: two state writes (claim, commit), one read and one enqueue per transition.

Run: ``python -m bench.aws_calls [--runs 20] [--seed 3] [--json]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.aws_moto import ROOT, Deployment, admin_client, create_deployment, moto_server

EVENTS = ROOT / "tests" / "events"
BUDGET = {"DynamoDB writes": 2.0, "DynamoDB reads": 1.0, "SQS sends": 1.0}
_WRITES = frozenset({"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem"})
_READS = frozenset({"Query", "GetItem", "Scan", "BatchGetItem"})
_SENDS = frozenset({"SendMessage", "SendMessageBatch"})


class LambdaContext:
    function_name = "relay"
    aws_request_id = "bench-request"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:relay"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def golden(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


def counting_hook(counts: Counter[str], service: str) -> Callable[..., None]:
    def count(model: Any, **_: Any) -> None:
        counts[f"{service} {model.name}"] += 1

    return count


def start_event(order: dict[str, Any], key: str) -> dict[str, Any]:
    event = golden("apigw_v2_start")
    path = "/v1/sagas/order/runs"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["body"] = json.dumps(order)
    event["headers"]["content-length"] = str(len(event["body"]))
    event["headers"]["idempotency-key"] = key
    return event


def sqs_event(messages: list[Any], queue_arn: str) -> dict[str, Any]:
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
            eventSourceARN=queue_arn,
        )
        records.append(record)
    return {"Records": records}


def measure(deployment: Deployment, runs: int, seed: int) -> dict[str, Any]:
    from functions import aws as lambda_entry
    from functions import wiring
    from functions.sagas.order import demo_inputs
    from infra.aws.dynamodb import DynamoDBStateStore

    context = LambdaContext()
    engine = wiring.get_engine()
    start_calls: Counter[str] = Counter()
    worker_calls: Counter[str] = Counter()
    poller_calls: Counter[str] = Counter()
    phase = {"counts": start_calls}

    def route(service: str) -> Callable[..., None]:
        def count(model: Any, **_: Any) -> None:
            phase["counts"][f"{service} {model.name}"] += 1

        return count

    # The function's clients, as the composition root built them (private attributes:
    # the adapters do not expose their clients, and the bench must not build others).
    engine.store._client.meta.events.register("before-call", route("DynamoDB"))  # type: ignore[attr-defined]
    engine.queue._client.meta.events.register("before-call", route("SQS"))  # type: ignore[attr-defined]
    visibility = lambda_entry._visibility_queue(deployment.queue_url)
    visibility._client.meta.events.register("before-call", route("SQS"))
    if engine.io_manager is not None:
        engine.io_manager._client.meta.events.register("before-call", route("S3"))  # type: ignore[attr-defined]

    sqs = admin_client("sqs", deployment.endpoint_url)
    sqs.meta.events.register("before-call", counting_hook(poller_calls, "SQS"))
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=deployment.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    poller_calls.clear()
    checker = DynamoDBStateStore(
        admin_client("dynamodb", deployment.endpoint_url), table_name=deployment.table
    )

    run_ids = []
    for number, order in enumerate(demo_inputs(runs, seed=seed)):
        response = lambda_entry.handler(start_event(order, f"bench-{seed}-{number}"), context)
        if response["statusCode"] != 202:
            raise SystemExit(f"start answered {response['statusCode']}: {response['body']}")
        run_ids.append(json.loads(response["body"])["run_id"])

    phase["counts"] = worker_calls
    records = batches = 0
    started = time.monotonic()
    while True:
        messages = sqs.receive_message(
            QueueUrl=deployment.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=30,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            batches += 1
            records += len(messages)
            result = lambda_entry.handler(sqs_event(messages, queue_arn), context)
            failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=deployment.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(done)
                    ],
                )
            continue
        snapshots = [checker.load_run(run_id=run_id) for run_id in run_ids]
        if all(s is not None and s.run.status.is_terminal for s in snapshots):
            break
        if time.monotonic() - started > 300:
            raise SystemExit("runs not terminal after 300 s")
        time.sleep(0.1)

    statuses: Counter[str] = Counter()
    transitions = 0
    for snapshot in snapshots:
        assert snapshot is not None
        statuses[snapshot.run.status.value] += 1
        transitions += sum(step.attempt for step in snapshot.steps.values())

    def per(kinds: frozenset[str], service: str) -> float:
        matching = [
            n for op, n in worker_calls.items() if op.split() in ([service, k] for k in kinds)
        ]
        return sum(matching) / transitions

    # The commit that ends a run also stamps the TTL on the steps it did not write: one
    # Query and one UpdateItem per such step, once per run (infra/aws/README.md).
    finished = sum(statuses.values())
    stamps = worker_calls.get("DynamoDB UpdateItem", 0)
    steady = {
        "DynamoDB writes": (per(_WRITES, "DynamoDB") * transitions - stamps) / transitions,
        "DynamoDB reads": (per(_READS, "DynamoDB") * transitions - finished) / transitions,
        "SQS sends": per(_SENDS, "SQS"),
    }
    grouped = {
        "DynamoDB writes": per(_WRITES, "DynamoDB"),
        "DynamoDB reads": per(_READS, "DynamoDB"),
        "SQS sends": per(_SENDS, "SQS"),
    }
    return {
        "runs": runs,
        "statuses": dict(statuses),
        "transitions": transitions,
        "sqs_records_handled": records,
        "batches": batches,
        "worker_calls": dict(sorted(worker_calls.items())),
        "worker_calls_per_transition": {
            op: n / transitions for op, n in sorted(worker_calls.items())
        },
        "worker_calls_total_per_transition": sum(worker_calls.values()) / transitions,
        "grouped_per_transition": grouped,
        "grouped_per_transition_without_end_of_run_stamps": steady,
        "end_of_run_calls_per_run": {
            "DynamoDB Query": 1.0,
            "DynamoDB UpdateItem": stamps / finished,
        },
        "budget_per_transition": BUDGET,
        "event_source_mapping_calls_per_transition": {
            op: n / transitions for op, n in sorted(poller_calls.items())
        },
        "start_calls_per_run": {op: n / runs for op, n in sorted(start_calls.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with moto_server() as url, tempfile.TemporaryDirectory(prefix="relay-aws-calls-") as tmp:
        deployment = create_deployment(url)
        os.environ.update(deployment.env())
        os.environ.update(
            RELAY_DATA_DIR=str(Path(tmp)), RELAY_SAGAS="order", RELAY_LOG_LEVEL="ERROR"
        )
        os.environ.pop("RELAY_FAULTS", None)
        result = measure(deployment, args.runs, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    statuses = ", ".join(f"{status} {n}" for status, n in sorted(result["statuses"].items()))
    print("AWS calls per step transition (order saga on moto server, Lambda SQS handler)")
    print(
        f"  {result['runs']} runs ({statuses}); {result['transitions']} step transitions "
        f"(claimed attempts); {result['sqs_records_handled']} SQS records in "
        f"{result['batches']} batches"
    )
    print("  the function's calls, per operation:")
    for op, n in result["worker_calls"].items():
        share = result["worker_calls_per_transition"][op]
        print(f"    {op:<32} {n:>5}  {share:.2f} per transition")
    total = result["worker_calls_total_per_transition"]
    print(f"    {'all':<32} {'':>5}  {total:.2f} per transition")
    print(
        "    (UpdateItem and one Query per run: the commit that ends a run stamps the TTL on "
        "the steps it did not write)"
    )
    print("  against DESIGN.md's budget per transition:")
    for name, value in result["grouped_per_transition"].items():
        budget = result["budget_per_transition"][name]
        print(f"    {name:<32} {value:.2f} (budget {budget:.0f}, ratio {value / budget:.2f})")
    print(
        "  the same without the end-of-run TTL stamps (per run: 1 Query + "
        f"{result['end_of_run_calls_per_run']['DynamoDB UpdateItem']:.1f} UpdateItem):"
    )
    for name, value in result["grouped_per_transition_without_end_of_run_stamps"].items():
        budget = result["budget_per_transition"][name]
        print(f"    {name:<32} {value:.2f} (budget {budget:.0f}, ratio {value / budget:.2f})")
    print("  the event source mapping's own calls (Lambda's poller, not the function):")
    for op, share in result["event_source_mapping_calls_per_transition"].items():
        print(f"    {op:<32} {share:.2f} per transition")
    print("  starting a run (HTTP API through Mangum), per run:")
    for op, share in result["start_calls_per_run"].items():
        print(f"    {op:<32} {share:.2f}")


if __name__ == "__main__":
    main()
