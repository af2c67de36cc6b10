"""The composition root's gcp branch: which variables it needs, and what it builds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core import ConfigurationError, Saga, StepContext
from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.registry import SagaRegistry
from functions.settings import Settings
from functions.wiring import DISPATCH_MARGIN_SECONDS, build_backend, step_dispatch_deadlines

_COMPLETE = {
    "RELAY_BACKEND": "gcp",
    "GOOGLE_CLOUD_PROJECT": "relay-test",
    "RELAY_TASKS_QUEUE": "projects/relay-test/locations/us-central1/queues/steps",
    "RELAY_WORKER_URL": "https://worker.example/relay/worker",
    "RELAY_TASKS_SERVICE_ACCOUNT": "tasks@relay-test.iam.gserviceaccount.com",
}


@pytest.fixture
def emulator_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point every Google client at an emulator address (nothing connects at build time)."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    yield


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        (("RELAY_TASKS_QUEUE",), "needs RELAY_TASKS_QUEUE \\("),
        (("RELAY_WORKER_URL",), "needs RELAY_WORKER_URL \\("),
        (("RELAY_TASKS_QUEUE", "RELAY_WORKER_URL"), "RELAY_TASKS_QUEUE and RELAY_WORKER_URL"),
    ],
)
def test_gcp_backend_names_the_missing_variable(removed: tuple[str, ...], message: str) -> None:
    """RELAY_BACKEND=gcp without the queue path or the worker URL says which is missing."""
    environ = {key: value for key, value in _COMPLETE.items() if key not in removed}
    with pytest.raises(ConfigurationError, match=message):
        build_backend(Settings.from_env(environ))


def test_gcp_backend_refuses_a_malformed_queue_path(emulator_variables: None) -> None:
    """A RELAY_TASKS_QUEUE that is not a queue path is refused with the variable's name."""
    environ = {**_COMPLETE, "RELAY_TASKS_QUEUE": "steps"}
    with pytest.raises(ConfigurationError, match="RELAY_TASKS_QUEUE"):
        build_backend(Settings.from_env(environ))


def test_gcp_backend_builds_firestore_cloud_tasks_and_no_io_manager(
    emulator_variables: None,
) -> None:
    """Without RELAY_GCS_BUCKET the gcp backend is Firestore + Cloud Tasks, outputs inline."""
    from infra.gcp.cloud_tasks import CloudTasksQueue
    from infra.gcp.firestore import FirestoreStateStore

    backend = build_backend(Settings.from_env(_COMPLETE))
    assert isinstance(backend.store, FirestoreStateStore)
    assert isinstance(backend.queue, CloudTasksQueue)
    assert backend.io_manager is None
    described = backend.queue.describe()
    assert (described["project"], described["queue"]) == ("relay-test", "steps")
    assert described["worker_url"] == _COMPLETE["RELAY_WORKER_URL"]


def test_gcp_backend_adds_gcs_outputs_when_a_bucket_is_set(emulator_variables: None) -> None:
    """RELAY_GCS_BUCKET adds the GCS I/O manager on that bucket."""
    from infra.gcp.gcs_io import GcsIOManager

    backend = build_backend(Settings.from_env({**_COMPLETE, "RELAY_GCS_BUCKET": "outputs"}))
    assert isinstance(backend.io_manager, GcsIOManager)
    assert backend.io_manager.describe()["bucket"] == "outputs"


def _noop(ctx: StepContext) -> None:
    return None


def test_dispatch_deadline_is_the_step_timeout_plus_a_margin() -> None:
    """A message's deadline is the timeout of its saga's step plus the margin."""
    first, second = Saga("first"), Saga("second")
    first.step(_noop, name="charge", timeout_seconds=40)
    second.step(_noop, name="charge", timeout_seconds=100)
    second.step(_noop, name="ship", timeout_seconds=5)
    deadlines = step_dispatch_deadlines(SagaRegistry({"first": first, "second": second}))

    def message(saga: str | None, step: str, action: Action = Action.EXECUTE) -> Message:
        return Message(RunId("r-1"), StepName(step), action, 1, saga=saga)

    assert deadlines(message("first", "charge")) == 40 + DISPATCH_MARGIN_SECONDS
    assert deadlines(message("second", "charge")) == 100 + DISPATCH_MARGIN_SECONDS
    assert deadlines(message("second", "ship")) == 5 + DISPATCH_MARGIN_SECONDS
    assert deadlines(message("second", "ship", Action.COMPENSATE)) == 5 + DISPATCH_MARGIN_SECONDS
    assert deadlines(message("second", "unknown")) is None
    assert deadlines(message("third", "charge")) is None
    assert deadlines(message(None, "charge")) is None  # format 1: the queue's default
