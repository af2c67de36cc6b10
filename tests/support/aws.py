"""moto in server mode for the AWS adapter tests: one process per test session, real HTTP.

``moto_endpoint`` starts ``_moto_server.py`` (``moto_server`` with its requests
serialised, see that module for why) with this interpreter on a free loopback port, waits
until ``GET /moto-api/`` answers, and stops it by PID when the session ends. Where moto or
boto3 is not installed, the tests that need it skip (and fail under ``CI=true``).
``aws_clients`` gives boto3 clients pointed at it; tests isolate themselves by giving
every table, queue and bucket a unique name (``unique_name``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra.local.runtime.supervisor import free_port
from tests.support import unavailable
from tests.support.processes import start_server

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

REGION = "us-east-1"
LAUNCHER = Path(__file__).with_name("_moto_server.py")
_NEEDED_MODULES = ("moto", "flask", "werkzeug", "boto3")


@dataclass(frozen=True)
class AwsClients:
    """boto3 clients on the session's moto server (dummy credentials, us-east-1)."""

    endpoint_url: str
    dynamodb: DynamoDBClient
    sqs: SQSClient
    s3: S3Client


def unique_name(prefix: str) -> str:
    """A resource name no other test uses: ``<prefix>-<12 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a moto server started for this test session."""
    missing = [name for name in _NEEDED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        unavailable(
            f"moto server needs {', '.join(missing)}: pip install -e '.[dev,aws]' "
            "(moto[server] and boto3)"
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        server = start_server(
            "moto",
            [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port)],
            port=port,
            log_dir=tmp_path_factory.mktemp("moto"),
            ready=lambda: _answers(url),
            timeout_seconds=30,
        )
    except RuntimeError as exc:
        unavailable(f"moto server did not start: {exc}")
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def aws_clients(moto_endpoint: str) -> Iterator[AwsClients]:
    """DynamoDB, SQS and S3 clients on the moto server, closed at the end of the session."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    options: dict[str, Any] = {
        "endpoint_url": moto_endpoint,
        "config": Config(
            max_pool_connections=32,
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": "path"},
        ),
    }
    clients = AwsClients(
        endpoint_url=moto_endpoint,
        dynamodb=session.client("dynamodb", **options),
        sqs=session.client("sqs", **options),
        s3=session.client("s3", **options),
    )
    try:
        yield clients
    finally:
        clients.dynamodb.close()
        clients.sqs.close()
        clients.s3.close()


@functools.cache
def quick_clients(endpoint_url: str) -> AwsClients:
    """Clients for diagnostics: 2 s to connect, 5 s to answer, no retries.

    A stall report must not wait on a busy moto for a client's default 30 s read timeout
    times its retries (``tests/support/stall.py`` bounds the whole report too).
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    config = Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"mode": "standard", "max_attempts": 1},
        s3={"addressing_style": "path"},
    )
    options: dict[str, Any] = {"endpoint_url": endpoint_url, "config": config}
    return AwsClients(
        endpoint_url=endpoint_url,
        dynamodb=session.client("dynamodb", **options),
        sqs=session.client("sqs", **options),
        s3=session.client("s3", **options),
    )


def moto_stats(endpoint_url: str, *, timeout_seconds: float = 5.0) -> dict[str, dict[str, Any]]:
    """moto's request counters by operation (``_moto_server.py``: count, seconds, waits)."""
    url = f"{endpoint_url}/relay-stats/"
    with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
        stats: dict[str, dict[str, Any]] = json.loads(response.read())
    return stats


def stats_delta(
    after: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """What happened between two ``moto_stats`` readings: count and seconds per operation."""
    delta: dict[str, dict[str, float]] = {}
    for op, now in after.items():
        then = before.get(op, {})
        count = now["count"] - then.get("count", 0)
        if count:
            delta[op] = {
                "count": count,
                "seconds": round(now["seconds"] - then.get("seconds", 0.0), 2),
                "lock_wait_seconds": round(
                    now["lock_wait_seconds"] - then.get("lock_wait_seconds", 0.0), 2
                ),
            }
    return delta


def delete_bucket(aws: AwsClients, bucket: str) -> None:
    """Delete a test bucket and everything in it."""
    listing = aws.s3.list_objects_v2(Bucket=bucket)
    objects = [{"Key": obj["Key"]} for obj in listing.get("Contents", []) if "Key" in obj]
    if objects:
        aws.s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    aws.s3.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def counting(client: Any) -> Iterator[Counter[str]]:
    """Count the API calls a boto3 client makes inside the block, by operation name."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call", count)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call", count)
