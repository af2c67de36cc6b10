"""Relay's GCP stack on the emulators: the functions-framework server behind a token proxy.

What runs (all on 127.0.0.1, free ports, stopped by PID at the end)::

    Cloud Tasks emulator ─┐                         ┌──────────────────────────────┐
    Pub/Sub emulator ─────┼─> TokenProxy ──Bearer──>│ functions-framework --asgi   │
    test "Cloud Scheduler"┘   (mints an RS256 ID    │   --target relay (gunicorn + │
                               token per request)    │   uvicorn worker, gcp.py)    │
                                                     └─────────┬────────────────────┘
    CertsServer: the test key's certificate as {kid: PEM}  <───┘ RELAY_OIDC_CERTS_URL
    Firestore emulator: run state          demo services: SQLite in RELAY_DATA_DIR

The emulators send no OIDC tokens, but Google's infrastructure does and the worker
refuses calls without one. ``TokenProxy`` (``oidc_proxy.py``) stands in for Google's
token minting: it signs an ID token with a test key (``iss`` https://accounts.google.com,
``aud`` the configured audience, ``email`` the configured service account,
``email_verified``) and forwards the request to the function; ``CertsServer`` publishes
that key's certificate the way Google publishes its own, and the worker is pointed at it
with ``RELAY_OIDC_CERTS_URL``. The proxy can also deliver a request twice, concurrently
(at-least-once delivery), for chaos.

The function server is gunicorn with one uvicorn worker (functions-framework's own
server). When an injected crash ``os._exit``s the worker, gunicorn starts a new one, as
Cloud Run starts a new instance; ``FunctionServer.ensure_running`` restarts the whole
server should it die, and ``crashes()`` counts worker deaths from gunicorn's log.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local.runtime.supervisor import free_port
from tests.support.gcp import (
    FirestoreEmulator,
    PubSubEmulator,
    TasksEmulator,
    environment_variable,
)
from tests.support.oidc_proxy import (
    AUDIENCE,
    SERVICE_ACCOUNT,
    CertsServer,
    TokenAuthority,
    TokenProxy,
)
from tests.support.processes import ServerProcess, start_server

__all__ = [
    "AUDIENCE",
    "SERVICE_ACCOUNT",
    "FunctionServer",
    "GcpStack",
    "TokenAuthority",
    "encode_data",
    "gcp_stack",
    "http_call",
]

if TYPE_CHECKING:
    from core.engine.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
SAGA_MODULES = "greet=tests.support.entry_points:greet,parcel=tests.e2e.waits_fixture:saga"
"""Test sagas beside the bundle's (``RELAY_SAGAS`` picks what a stack serves)."""
MAPPED_TOPIC = "people.mapped.joined"
"""The Relay topic ``RELAY_PUBSUB_TOPICS`` gives the stack's push subscription."""


# --- the function server -----------------------------------------------------------------


class FunctionServer:
    """``functions-framework --asgi --source functions/gcp.py --target <target>``."""

    def __init__(self, *, target: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.target = target
        self.env = dict(env)
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.restarts = 0
        self._process: ServerProcess | None = None
        self._lock = threading.Lock()
        self._generation = 0

    def start(self) -> None:
        """Start the server and wait until ``/healthz`` answers."""
        executable = Path(sys.executable).parent / "functions-framework"
        self._generation += 1
        self._process = start_server(
            f"function-{self.target}-{self._generation}",
            [
                str(executable),
                "--asgi",
                "--source",
                str(ROOT / "functions" / "gcp.py"),
                "--target",
                self.target,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            port=self.port,
            log_dir=self.log_dir,
            env=self.env,
            # A CloudEvent target serves POST only: an open port is all it can show.
            ready=None if self.target == "pubsub" else lambda: _healthy(self.url),
            timeout_seconds=60,
        )

    def ensure_running(self) -> bool:
        """Restart the server if it died; True when it had to."""
        with self._lock:
            if self._process is not None and self._process.process.poll() is None:
                return False
            self.restarts += 1
            self.start()
            return True

    def stop(self) -> None:
        """Stop the server (process group: gunicorn and its worker)."""
        if self._process is not None:
            self._process.stop()

    def logs(self) -> str:
        """Everything the server generations wrote."""
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.log_dir.glob(f"function-{self.target}-*.log"))
        )

    def crashes(self, exit_code: int) -> int:
        """Worker processes gunicorn saw exit with ``exit_code`` (injected crashes)."""
        return len(re.findall(rf"exited with code {exit_code}\b", self.logs()))


def _healthy(url: str) -> bool:
    try:
        status, _ = http_call("GET", f"{url}/healthz", timeout=1.0)
    except OSError:
        return False
    return status == 200


def http_call(
    method: str,
    url: str,
    payload: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One JSON request without any proxy settings; (status, decoded JSON or text)."""
    parts = urllib.parse.urlsplit(url)
    body = None if payload is None else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def _call_patiently(
    method: str, url: str, payload: Any, headers: Mapping[str, str], *, retry: bool
) -> tuple[int, Any]:
    """``http_call``, retried for up to 30 s on a dropped connection or a 5xx answer."""
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = http_call(method, url, payload, headers=headers)
        except (OSError, http.client.HTTPException):
            if not retry or time.monotonic() > deadline:
                raise
        else:
            if status < 500 or not retry or time.monotonic() > deadline:
                return status, body
        time.sleep(0.3)


# --- the whole stack ---------------------------------------------------------------------


@dataclass
class GcpStack:
    """Everything one test needs: URLs, the environment, the emulator resources."""

    function: FunctionServer
    proxy: TokenProxy
    certs: CertsServer
    authority: TokenAuthority
    env: dict[str, str]
    queue_path: str
    collection: str
    data_dir: Path
    pubsub: PubSubEmulator
    push_subscription: str | None = None
    topic_path: str | None = None

    def start_run(self, saga: str, payload: Any, *, key: str | None = None) -> str:
        """Start a run through the public API (no token needed); its run id.

        With a key, a request cut off by a worker crash is retried, as a client would
        (the key makes the retry find the run the first request may have created).
        """
        headers = {"Idempotency-Key": key} if key else {}
        url = f"{self.function.url}/v1/sagas/{saga}/runs"
        status, body = _call_patiently("POST", url, payload, headers, retry=key is not None)
        assert status == 202, body
        run_id: str = body["run_id"]
        return run_id

    def get_run(self, run_id: str) -> dict[str, Any]:
        """``GET /v1/runs/{run_id}`` from the function (retried across a worker crash)."""
        status, body = _call_patiently(
            "GET", f"{self.function.url}/v1/runs/{run_id}", None, {}, retry=True
        )
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    def wait_for(
        self, run_ids: list[str], statuses: frozenset[str], *, timeout_seconds: float
    ) -> dict[str, str]:
        """Poll until every run has one of ``statuses``; their statuses (raises on timeout)."""
        deadline = time.monotonic() + timeout_seconds
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            seen = {run_id: self.get_run(run_id)["status"] for run_id in run_ids}
            if all(status in statuses for status in seen.values()):
                return seen
            time.sleep(0.3)
        raise AssertionError(
            f"runs not in {sorted(statuses)} after {timeout_seconds}s: {seen}\n"
            f"function log tail:\n{self.function.logs()[-3000:]}"
        )

    def engine(self) -> Engine:
        """An engine in the test process on the same Firestore collection and queue."""
        from functions.settings import Settings
        from functions.wiring import build_engine

        settings = Settings.from_env({**self.env, "RELAY_FAULTS": ""})
        with (
            environment_variable("FIRESTORE_EMULATOR_HOST", self.env["FIRESTORE_EMULATOR_HOST"]),
            environment_variable(
                "CLOUD_TASKS_EMULATOR_HOST", self.env["CLOUD_TASKS_EMULATOR_HOST"]
            ),
        ):
            return build_engine(settings)

    def publish(self, data: Any, **attributes: str) -> str:
        """Publish JSON ``data`` to the stack's Pub/Sub topic; the message id."""
        assert self.topic_path is not None
        publisher = self.pubsub.publisher()
        try:
            future = publisher.publish(self.topic_path, json.dumps(data).encode(), **attributes)
            message_id: str = future.result(timeout=30)
        finally:
            publisher.stop()
        return message_id


@contextmanager
def gcp_stack(
    *,
    firestore: FirestoreEmulator,
    tasks: TasksEmulator,
    pubsub: PubSubEmulator,
    tmp_path: Path,
    sagas: str = "order,greet",
    faults: str = "",
    duplicate_probability: float = 0.0,
    with_push_subscription: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[GcpStack]:
    """The whole stack for one test, torn down (by PID) on the way out.

    The queue, collection, topic and subscription are new for each stack, so stacks do
    not see each other's state on the shared session emulators.
    """
    tasks_client = tasks.client()
    authority = TokenAuthority()
    certs = CertsServer(authority)
    data_dir = tmp_path / "relay-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    collection = firestore.unique_collection()
    subscription_id = pubsub.unique_name("relay-push")
    with tasks.queue(tasks_client) as queue_path:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
            "RELAY_BACKEND": "gcp",
            "GOOGLE_CLOUD_PROJECT": firestore.project,
            "FIRESTORE_EMULATOR_HOST": firestore.host,
            "CLOUD_TASKS_EMULATOR_HOST": tasks.host,
            "PUBSUB_EMULATOR_HOST": pubsub.host,
            "RELAY_FIRESTORE_COLLECTION": collection,
            "RELAY_TASKS_QUEUE": queue_path,
            "RELAY_TASKS_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
            "RELAY_TASKS_AUDIENCE": AUDIENCE,
            "RELAY_OIDC_CERTS_URL": certs.url,
            "RELAY_DATA_DIR": str(data_dir),
            "RELAY_SAGAS": sagas,
            "RELAY_SAGA_MODULES": SAGA_MODULES,
            "RELAY_METRICS": "off",
            "RELAY_FAULTS": faults,
            # Messages without a topic attribute: the subscription names the topic.
            "RELAY_PUBSUB_TOPICS": json.dumps({subscription_id: MAPPED_TOPIC}),
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        function = FunctionServer(target="relay", env=env, log_dir=tmp_path / "function-logs")
        proxy = TokenProxy(
            authority, target_port=function.port, duplicate_probability=duplicate_probability
        )
        # Cloud Tasks POSTs to RELAY_WORKER_URL: the proxy, which adds the token.
        env["RELAY_WORKER_URL"] = function.env["RELAY_WORKER_URL"] = f"{proxy.url}/v1/steps"
        stack = GcpStack(
            function=function,
            proxy=proxy,
            certs=certs,
            authority=authority,
            env=env,
            queue_path=queue_path,
            collection=collection,
            data_dir=data_dir,
            pubsub=pubsub,
        )
        subscriber = None
        try:
            function.start()
            if with_push_subscription:
                subscriber = pubsub.subscriber()
                _create_push_subscription(stack, subscriber, subscription_id)
            yield stack
        finally:
            if subscriber is not None and stack.push_subscription is not None:
                subscriber.delete_subscription(subscription=stack.push_subscription)
                subscriber.close()
            function.stop()
            proxy.close()
            certs.close()
    tasks_client.transport.close()


def _create_push_subscription(stack: GcpStack, subscriber: Any, subscription_id: str) -> None:
    """A topic and a push subscription to the proxy's ``/v1/events`` (as Terraform makes)."""
    from google.cloud import pubsub_v1

    pubsub = stack.pubsub
    topic_id = pubsub.unique_name("relay-events")
    publisher = pubsub.publisher()
    topic_path = publisher.topic_path(pubsub.project, topic_id)
    publisher.create_topic(name=topic_path)
    publisher.stop()
    subscription = subscriber.subscription_path(pubsub.project, subscription_id)
    subscriber.create_subscription(
        name=subscription,
        topic=topic_path,
        push_config=pubsub_v1.types.PushConfig(push_endpoint=f"{stack.proxy.url}/v1/events"),
        ack_deadline_seconds=30,
    )
    stack.topic_path, stack.push_subscription = topic_path, subscription


def forged_token(stack: GcpStack, **claims: str) -> str:
    """A token signed by a stranger's key (or with wrong claims when ``claims`` are given)."""
    if claims:
        return stack.authority.mint(**claims)
    return TokenAuthority().mint()


def encode_data(data: Any) -> str:
    """Pub/Sub's base64 of JSON."""
    return base64.b64encode(json.dumps(data).encode()).decode()
