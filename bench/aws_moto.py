"""Shared by the AWS benchmarks: a moto server process and a deployment's resources on it.

The server is ``tests/support/_moto_server.py`` (``moto_server`` with requests
serialised, as the tests run it), started on a free loopback port and stopped by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.local.runtime.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "tests" / "support" / "_moto_server.py"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def moto_server() -> Iterator[str]:
    """The URL of a moto server process that lives for the block."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("moto server did not start")
            time.sleep(0.05)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Deployment:
    """A table, a standard queue with its DLQ and a bucket, as Terraform would create them."""

    endpoint_url: str
    table: str
    queue_url: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The Lambda function's environment for this deployment (moto as the endpoint)."""
        return {
            "RELAY_BACKEND": "aws",
            "RELAY_DYNAMODB_TABLE": self.table,
            "RELAY_SQS_QUEUE_URL": self.queue_url,
            "RELAY_S3_BUCKET": self.bucket,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **CREDENTIALS,
        }


def admin_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client on moto for setting up and inspecting (never counted)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return session.client(service, endpoint_url=endpoint_url)  # type: ignore[call-overload]


def create_deployment(endpoint_url: str) -> Deployment:
    """Create the resources of one deployment with unique names."""
    from infra.aws.dynamodb import create_table
    from infra.aws.sqs import create_queue

    suffix = uuid.uuid4().hex[:8]
    table, bucket = f"relay-bench-{suffix}", f"relay-bench-{suffix}"
    create_table(admin_client("dynamodb", endpoint_url), table_name=table)
    queue = create_queue(admin_client("sqs", endpoint_url), name=f"relay-bench-{suffix}")
    admin_client("s3", endpoint_url).create_bucket(Bucket=bucket)
    return Deployment(endpoint_url, table, queue.queue_url, bucket)
