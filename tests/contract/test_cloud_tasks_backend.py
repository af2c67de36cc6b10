"""Cloud Tasks specifics beyond the push-queue contract: the task each message becomes.

Tasks scheduled an hour ahead stay in the emulator's queue, so ``ListTasks`` shows
exactly what ``CloudTasksQueue`` sent: name, HTTP request, OIDC token, deadline, schedule.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.errors import ConfigurationError
from infra.gcp.cloud_tasks import CloudTasksQueue, clamp_dispatch_deadline, task_id
from tests.support.backends.push import PushReceiver
from tests.support.gcp import TasksEmulator

if TYPE_CHECKING:
    from google.cloud.tasks_v2 import CloudTasksClient, Task

WORKER_URL = "https://worker.example/relay/worker"
SERVICE_ACCOUNT = "tasks@relay-test.iam.gserviceaccount.com"


@pytest.fixture
def tasks_client(tasks_emulator: TasksEmulator) -> Iterator[CloudTasksClient]:
    """A Cloud Tasks client on the emulator, closed after the test."""
    client = tasks_emulator.client()
    yield client
    client.transport.close()


@pytest.fixture
def queue_path(tasks_emulator: TasksEmulator, tasks_client: CloudTasksClient) -> Iterator[str]:
    """A fresh emulator queue."""
    with tasks_emulator.queue(tasks_client) as path:
        yield path


def _later(step: str = "charge_card", attempt: int = 1) -> Message:
    """A message due in an hour: it stays listed in the queue."""
    return Message(
        RunId("r-42"), StepName(step), Action.EXECUTE, attempt, not_before=time.time() + 3600
    )


def _stored(client: CloudTasksClient, queue_path: str) -> dict[str, Task]:
    tasks = list(client.list_tasks(parent=queue_path))
    return {task.name: task for task in tasks}


def test_task_id_is_a_hash_prefix_then_the_readable_id() -> None:
    """The task id is sha256(message id) in hex, a dash, then the id made name-safe."""
    ident = task_id("r-42/charge card/execute/3")
    assert re.fullmatch(r"[0-9a-f]{64}-r-42_charge_card_execute_3", ident)
    assert task_id("r-42/charge card/execute/3") == ident


def test_task_ids_stay_distinct_and_valid_for_any_message_id() -> None:
    """Ids that sanitise alike still differ (the hash), and long ids stay within 500 chars."""
    assert task_id("a/b") != task_id("a_b")
    long_id = task_id("r/" + "é" * 2000)
    assert len(long_id) <= 500
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,500}", long_id)


def test_dispatch_deadline_is_clamped_to_what_cloud_tasks_allows() -> None:
    """Deadlines below 15 s or above 30 min are moved to the nearest bound."""
    assert [clamp_dispatch_deadline(s) for s in (1, 15, 90, 1800, 7200)] == [
        15,
        15,
        90,
        1800,
        1800,
    ]


def test_malformed_settings_are_configuration_errors(tasks_client: CloudTasksClient) -> None:
    """A queue that is not a queue path, or an audience without a signer, is refused."""
    with pytest.raises(ConfigurationError, match="RELAY_TASKS_QUEUE"):
        CloudTasksQueue(tasks_client, queue_path="steps", worker_url=WORKER_URL)
    with pytest.raises(ConfigurationError, match="RELAY_TASKS_SERVICE_ACCOUNT"):
        CloudTasksQueue(
            tasks_client,
            queue_path="projects/p/locations/l/queues/q",
            worker_url=WORKER_URL,
            audience="https://aud",
        )


def test_task_carries_body_oidc_token_deadline_and_schedule(
    tasks_client: CloudTasksClient, queue_path: str
) -> None:
    """The stored task is a POST of the JSON message with an OIDC token for the worker URL."""
    queue = CloudTasksQueue(
        tasks_client,
        queue_path=queue_path,
        worker_url=WORKER_URL,
        service_account_email=SERVICE_ACCOUNT,
        dispatch_deadline_seconds=5,
    )
    message = _later()
    queue.enqueue(messages=[message])

    task = _stored(tasks_client, queue_path)[queue.task_name(message)]
    request = task.http_request
    assert request.url == WORKER_URL
    assert request.http_method.name == "POST"
    assert dict(request.headers) == {"Content-Type": "application/json"}
    assert json.loads(request.body) == message.to_json()
    assert request.oidc_token.service_account_email == SERVICE_ACCOUNT
    assert request.oidc_token.audience == WORKER_URL
    assert task.dispatch_deadline == datetime.timedelta(seconds=15)
    assert message.not_before is not None
    scheduled = task.schedule_time.timestamp()
    assert abs(scheduled - message.not_before) < 1e-5


def test_per_message_deadline_and_explicit_audience(
    tasks_client: CloudTasksClient, queue_path: str
) -> None:
    """The per-message deadline hook wins over the default; an explicit audience is used."""
    queue = CloudTasksQueue(
        tasks_client,
        queue_path=queue_path,
        worker_url=WORKER_URL,
        service_account_email=SERVICE_ACCOUNT,
        audience="https://relay.example",
        dispatch_deadline=lambda m: 120.0 if m.step == "slow" else None,
    )
    slow, fast = _later("slow"), _later("fast")
    queue.enqueue(messages=[slow, fast])

    stored = _stored(tasks_client, queue_path)
    slow_task, fast_task = stored[queue.task_name(slow)], stored[queue.task_name(fast)]
    assert slow_task.dispatch_deadline == datetime.timedelta(seconds=120)
    assert fast_task.dispatch_deadline == datetime.timedelta(seconds=600)
    assert slow_task.http_request.oidc_token.audience == "https://relay.example"


def test_without_a_service_account_no_token_is_requested(
    tasks_client: CloudTasksClient, queue_path: str
) -> None:
    """Without RELAY_TASKS_SERVICE_ACCOUNT the task has no OIDC token (local/emulator use)."""
    queue = CloudTasksQueue(tasks_client, queue_path=queue_path, worker_url=WORKER_URL)
    message = _later()
    queue.enqueue(messages=[message])
    task = _stored(tasks_client, queue_path)[queue.task_name(message)]
    assert not task.http_request.oidc_token.service_account_email


def test_emulator_delivers_without_a_token(
    tasks_client: CloudTasksClient, queue_path: str, push_receiver: PushReceiver
) -> None:
    """The emulator ignores the OIDC token: deliveries carry no Authorization header.

    The worker's token check is therefore tested with tokens the tests mint, not here.
    """
    queue = CloudTasksQueue(
        tasks_client,
        queue_path=queue_path,
        worker_url=push_receiver.url,
        service_account_email=SERVICE_ACCOUNT,
    )
    message = Message(RunId("r-7"), StepName("ship"), Action.EXECUTE, 1)
    queue.enqueue(messages=[message])
    got = push_receiver.wait_for(1, timeout_seconds=5)
    assert len(got) == 1
    assert got[0].header("Authorization") is None
    assert got[0].header("X-CloudTasks-TaskName") == task_id(message.message_id)


def test_describe_names_project_location_queue_endpoint_and_worker(
    tasks_emulator: TasksEmulator, tasks_client: CloudTasksClient, queue_path: str
) -> None:
    """describe() says where tasks go: project, location, queue, emulator endpoint, worker."""
    queue = CloudTasksQueue(tasks_client, queue_path=queue_path, worker_url=WORKER_URL)
    assert queue.describe() == {
        "project": tasks_emulator.project,
        "location": tasks_emulator.location,
        "queue": queue_path.rsplit("/", 1)[-1],
        "endpoint": tasks_emulator.host,
        "worker_url": WORKER_URL,
    }
