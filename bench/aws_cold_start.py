"""Cold start of the Lambda handler against a bare Mangum floor, both writing to moto server.

Each measurement spawns a fresh interpreter running ``bench/lambda_runtime.py`` (import
the handler, invoke it once) and stops the clock when the response comes back:

* ``relay``: ``functions.aws:handler`` with an API Gateway v2 ``POST
  /v1/sagas/noop/runs`` — Relay's imports, its engine, Starlette through Mangum, and
  the start of a run (one DynamoDB TransactWriteItems, one SQS SendMessageBatch);
* ``floor``: ``bench/aws_floor_function.py`` — Mangum around a bare ASGI app that
  imports boto3 and makes one DynamoDB PutItem (DESIGN.md's floor).

Both run against the same moto server in the same bench run, repetitions interleaved so
drift on a shared machine hits both. Run: ``python -m bench.aws_cold_start [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.aws_moto import ROOT, Deployment, admin_client, create_deployment, moto_server

RUNTIME = ROOT / "bench" / "lambda_runtime.py"


def start_event(key: str) -> dict[str, Any]:
    """The golden API Gateway v2 POST, aimed at the no-op saga."""
    event: dict[str, Any] = json.loads(
        (ROOT / "tests" / "events" / "apigw_v2_start.json").read_text()
    )
    path = "/v1/sagas/noop/runs"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["body"] = "{}"
    event["headers"]["content-length"] = "2"
    event["headers"]["idempotency-key"] = key
    return event


def time_to_response(target: str, event: dict[str, Any], env: dict[str, str], tmp: Path) -> float:
    """Seconds from spawning a fresh interpreter to ``target``'s first response."""
    event_path = tmp / f"event-{uuid.uuid4().hex}.json"
    event_path.write_text(json.dumps(event))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(RUNTIME), target, str(event_path)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    proc.wait(timeout=30)
    status = json.loads(line or "{}").get("statusCode")
    expected = 202 if target.startswith("functions.aws") else 200
    if status != expected:
        raise SystemExit(f"{target} answered {status!r}, expected {expected}")
    return elapsed


def base_env(deployment: Deployment) -> dict[str, str]:
    env = {**os.environ, **deployment.env(), "PYTHONPATH": str(ROOT)}
    for name in ("RELAY_FAULTS", "RELAY_SCHEDULER_ROLE_ARN", "RELAY_S3_BUCKET"):
        env.pop(name, None)
    return env


def measure(repeats: int) -> dict[str, Any]:
    """Interleaved floor and relay cold starts on one moto server."""
    floor: list[float] = []
    relay: list[float] = []
    with moto_server() as url, tempfile.TemporaryDirectory(prefix="relay-aws-cold-") as tmp:
        deployment = create_deployment(url)
        env = base_env(deployment)
        relay_env = {
            **env,
            "RELAY_DATA_DIR": tmp,
            "RELAY_SAGA_MODULES": "noop=bench.noop_saga:saga",
            "RELAY_SAGAS": "noop",
        }
        floor_env = {**env, "FLOOR_TABLE": deployment.table}
        # One write each before measuring, so moto's own first-request costs hit neither.
        time_to_response("bench.aws_floor_function:handler", start_event("x"), floor_env, Path(tmp))
        time_to_response("functions.aws:handler", start_event("warm"), relay_env, Path(tmp))
        for index in range(repeats):
            floor.append(
                time_to_response(
                    "bench.aws_floor_function:handler", start_event("x"), floor_env, Path(tmp)
                )
            )
            relay.append(
                time_to_response(
                    "functions.aws:handler", start_event(f"cold-{index}"), relay_env, Path(tmp)
                )
            )
        runs = admin_client("dynamodb", url).scan(
            TableName=deployment.table,
            FilterExpression="sk = :run",
            ExpressionAttributeValues={":run": {"S": "RUN"}},
        )["Count"]
        if runs != repeats + 1:
            raise SystemExit(f"expected {repeats + 1} runs in DynamoDB, found {runs}")
    return {
        "repeats": repeats,
        "floor_median_seconds": statistics.median(floor),
        "relay_median_seconds": statistics.median(relay),
        "ratio": statistics.median(relay) / statistics.median(floor),
        "floor_seconds": floor,
        "relay_seconds": relay,
    }


def report(result: dict[str, Any]) -> None:
    print("cold start, fresh interpreter -> first response (Lambda handler, moto server)")
    floor_ms = result["floor_median_seconds"] * 1000
    relay_ms = result["relay_median_seconds"] * 1000
    print(f"  floor (bare Mangum handler, boto3 + one DynamoDB PutItem): median {floor_ms:.0f} ms")
    print(
        f"  relay functions.aws:handler (HTTP start of a run: DynamoDB + SQS): "
        f"median {relay_ms:.0f} ms"
    )
    print(f"  ratio {result['ratio']:.2f} (target <= 1.5), {result['repeats']} interleaved repeats")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)


if __name__ == "__main__":
    main()
