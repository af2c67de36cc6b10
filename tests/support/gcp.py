"""The Google Cloud emulators: Firestore and Pub/Sub (gcloud, Java), Storage and Tasks (PyPI).

Each is started once per test session, on a free loopback port, the first time a test
asks for it, and stopped by process group at the end (the Firestore emulator is a gcloud
wrapper that spawns a Java child). Tests isolate themselves with a fresh collection or
bucket name. Without gcloud/Java, or when an emulator does not start, the tests that need
it skip with the reason — or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from infra.local.runtime.supervisor import free_port
from tests.support import unavailable
from tests.support.processes import ServerProcess, start_server

if TYPE_CHECKING:
    from google.cloud import firestore, storage, tasks_v2

FIRESTORE_PROJECT = "relay-test"
STORAGE_PROJECT = "test"
_START_TIMEOUT_SECONDS = 90.0


@contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """Set ``name`` for the duration of the block, then restore what was there."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _http_answers(url: str, expected: str | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            body: bytes = response.read()
    except (OSError, urllib.error.URLError):
        return False
    return expected is None or body.decode(errors="replace").strip() == expected


@dataclass(frozen=True)
class FirestoreEmulator:
    """A running Firestore emulator; ``client()`` builds a client pointed at it."""

    host: str
    project: str
    startup_seconds: float

    def client(self) -> firestore.Client:
        """A Firestore client for the emulator (``FIRESTORE_EMULATOR_HOST`` is read once,
        at construction, and restored right after)."""
        from google.cloud import firestore

        with environment_variable("FIRESTORE_EMULATOR_HOST", self.host):
            return firestore.Client(project=self.project)

    def unique_collection(self) -> str:
        """A collection name no other test uses, so tests need no reset between them."""
        return f"relay_runs_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class StorageEmulator:
    """A running Cloud Storage emulator; ``client()`` builds a client pointed at it."""

    endpoint: str
    project: str
    startup_seconds: float

    def client(self) -> storage.Client:
        """An anonymous storage client for the emulator (``STORAGE_EMULATOR_HOST`` is
        read once, at construction, and restored right after)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        with environment_variable("STORAGE_EMULATOR_HOST", self.endpoint):
            return storage.Client(project=self.project, credentials=AnonymousCredentials())

    def unique_bucket_name(self) -> str:
        """A bucket name no other test uses."""
        return f"relay-test-{uuid.uuid4().hex[:16]}"


def _require_module(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        unavailable(f"{module} is not installed ({exc}); install the '{extra}' extra")


def _start(name: str, command: list[str], *, port: int, log_dir: Path, ready: Any) -> ServerProcess:
    env = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    try:
        return start_server(
            name,
            command,
            port=port,
            log_dir=log_dir,
            env=env,
            ready=ready,
            timeout_seconds=_START_TIMEOUT_SECONDS,
        )
    except (OSError, RuntimeError) as exc:
        unavailable(f"{name} did not start: {exc}")


def _start_gcloud_emulator(
    product: str, arguments: list[str], port: int, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """``gcloud <arguments> --host-port=127.0.0.1:PORT``, ready when it answers "Ok"."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        unavailable(f"gcloud is not on PATH: the {product} emulator ships with the Cloud SDK")
    if shutil.which("java") is None:
        unavailable(f"java is not on PATH: the {product} emulator needs a Java runtime")
    name = product.lower().replace("/", "") + "-emulator"
    return _start(
        name,
        [gcloud, *arguments, f"--host-port=127.0.0.1:{port}"],
        port=port,
        log_dir=tmp_path_factory.mktemp(name),
        ready=lambda: _http_answers(f"http://127.0.0.1:{port}/", "Ok"),
    )


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    """The Firestore emulator (``gcloud emulators firestore start``), once per session."""
    _require_module("google.cloud.firestore", "gcp")
    port, started = free_port(), time.monotonic()
    server = _start_gcloud_emulator(
        "Firestore", ["emulators", "firestore", "start"], port, tmp_path_factory
    )
    try:
        yield FirestoreEmulator(
            host=f"127.0.0.1:{port}",
            project=FIRESTORE_PROJECT,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def storage_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageEmulator]:
    """The Cloud Storage emulator (PyPI ``gcloud-storage-emulator``, in memory), once."""
    _require_module("google.cloud.storage", "gcp")
    executable = shutil.which("gcloud-storage-emulator") or _next_to_python(
        "gcloud-storage-emulator"
    )
    if executable is None:
        unavailable("gcloud-storage-emulator is not installed; install the 'dev' extra")
    port = free_port()
    work_dir = tmp_path_factory.mktemp("storage-emulator")
    started = time.monotonic()
    server = _start(
        "storage-emulator",
        # Objects stay in memory, but the emulator always writes its bucket list to
        # ./.cloudstorage/.meta (its --data-dir flag is ignored in 0.5): run it in a
        # directory of its own, not the repository. `exec` keeps the PID we stop.
        [
            "/bin/sh",
            "-c",
            'cd "$0" && exec "$@"',
            str(work_dir),
            executable,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-store-on-disk",
        ],
        port=port,
        log_dir=work_dir,
        ready=lambda: _http_answers(f"http://127.0.0.1:{port}/"),
    )
    try:
        yield StorageEmulator(
            endpoint=f"http://127.0.0.1:{port}",
            project=STORAGE_PROJECT,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        server.stop()


def _next_to_python(name: str) -> str | None:
    """A console script installed in the running interpreter's environment."""
    import sys

    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


# --- Cloud Tasks ---------------------------------------------------------------------

TASKS_PROJECT = "relay-test"
TASKS_LOCATION = "us-central1"
TASKS_EMULATOR_VENV = Path(__file__).resolve().parents[2] / ".venv-tasks-emulator"
"""The emulator's own virtualenv (``make tasks-emulator``; ``make install`` builds it):
``gcloud-tasks-emulator`` pins protobuf<5, which the project's Google clients refuse."""


@dataclass(frozen=True)
class TasksEmulator:
    """A running Cloud Tasks emulator; ``client()`` talks to it over plain gRPC."""

    host: str
    project: str
    location: str
    startup_seconds: float

    def client(self) -> tasks_v2.CloudTasksClient:
        """A Cloud Tasks client on an insecure channel to the emulator (no credentials)."""
        import grpc
        from google.cloud import tasks_v2
        from google.cloud.tasks_v2.services.cloud_tasks.transports import (
            CloudTasksGrpcTransport,
        )

        channel = grpc.insecure_channel(self.host)
        transport = CloudTasksGrpcTransport(host=self.host, channel=channel)
        return tasks_v2.CloudTasksClient(transport=transport)

    def unique_queue_path(self) -> str:
        """A queue path no other test uses (the queue is not created)."""
        return (
            f"projects/{self.project}/locations/{self.location}/queues/"
            f"relay-{uuid.uuid4().hex[:16]}"
        )

    @contextmanager
    def queue(self, client: tasks_v2.CloudTasksClient) -> Iterator[str]:
        """Create a fresh queue, yield its path, delete it (and its tasks) afterwards."""
        from google.cloud import tasks_v2

        path = self.unique_queue_path()
        parent = path.rsplit("/queues/", 1)[0]
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=path))
        try:
            yield path
        finally:
            client.delete_queue(name=path)


@pytest.fixture(scope="session")
def tasks_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TasksEmulator]:
    """The Cloud Tasks emulator (PyPI ``gcloud-tasks-emulator==0.6.2``, own venv), once."""
    _require_module("google.cloud.tasks_v2", "gcp")
    executable = TASKS_EMULATOR_VENV / "bin" / "gcloud-tasks-emulator"
    if not executable.exists():
        unavailable(
            f"{executable} is missing: run `make tasks-emulator` (part of `make install`) "
            "to create the emulator's own virtualenv"
        )
    port = free_port()
    started = time.monotonic()
    server = _start(
        "tasks-emulator",
        # HTTP tasks go to their own URLs; --target-* only matter for App Engine tasks.
        [str(executable), "start", f"--port={port}", "--quiet"],
        port=port,
        log_dir=tmp_path_factory.mktemp("tasks-emulator"),
        ready=None,
    )
    try:
        yield TasksEmulator(
            host=f"127.0.0.1:{port}",
            project=TASKS_PROJECT,
            location=TASKS_LOCATION,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        server.stop()


# --- Pub/Sub -------------------------------------------------------------------------

PUBSUB_PROJECT = "relay-test"


@dataclass(frozen=True)
class PubSubEmulator:
    """A running Pub/Sub emulator; clients built by ``publisher()``/``subscriber()``."""

    host: str
    project: str
    startup_seconds: float

    def publisher(self) -> Any:
        """A ``PublisherClient`` for the emulator (``PUBSUB_EMULATOR_HOST`` read at build)."""
        from google.cloud import pubsub_v1

        with environment_variable("PUBSUB_EMULATOR_HOST", self.host):
            return pubsub_v1.PublisherClient()

    def subscriber(self) -> Any:
        """A ``SubscriberClient`` for the emulator."""
        from google.cloud import pubsub_v1

        with environment_variable("PUBSUB_EMULATOR_HOST", self.host):
            return pubsub_v1.SubscriberClient()

    def unique_name(self, prefix: str) -> str:
        """A topic or subscription id no other test uses."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The Pub/Sub emulator (``gcloud beta emulators pubsub start``, Java), once per session."""
    _require_module("google.cloud.pubsub_v1", "gcp")
    port, started = free_port(), time.monotonic()
    server = _start_gcloud_emulator(
        "Pub/Sub",
        ["beta", "emulators", "pubsub", "start", f"--project={PUBSUB_PROJECT}"],
        port,
        tmp_path_factory,
    )
    try:
        yield PubSubEmulator(
            host=f"127.0.0.1:{port}",
            project=PUBSUB_PROJECT,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        server.stop()
