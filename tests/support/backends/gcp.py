"""GCP adapters (Firestore, GCS, Cloud Tasks) against their emulators, for the contract and
engine suites.

The emulators start once per session, lazily (``tests/support/gcp.py``); each test gets
its own Firestore collection and its own bucket, so no test sees another's data.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.ports.api_keys import ApiKeyStore
from core.ports.clock import FixedClock
from core.ports.io_manager import IOManager
from infra.gcp.cloud_tasks import CloudTasksQueue
from infra.gcp.firestore import FirestoreStateStore
from infra.gcp.firestore_api_keys import FirestoreApiKeyStore
from infra.gcp.gcs_io import GcsIOManager
from infra.local.runtime.supervisor import free_port
from tests.support.backends.push import PushQueueUnderTest, PushReceiver, push_receiver
from tests.support.backends.registry import (
    StoreAndQueue,
    api_key_store_backend,
    io_manager_backend,
    push_queue_backend,
    state_store_backend,
)
from tests.support.gcp import (
    FirestoreEmulator,
    StorageEmulator,
    TasksEmulator,
    firestore_emulator,
    storage_emulator,
    tasks_emulator,
)

__all__ = [
    "cloud_tasks_queue",
    "firestore_emulator",
    "firestore_keys",
    "firestore_store",
    "gcs_io",
    "push_receiver",
    "storage_emulator",
    "tasks_emulator",
]


@state_store_backend
def firestore_store(
    firestore_emulator: FirestoreEmulator, clock: FixedClock
) -> Iterator[StoreAndQueue]:
    client = firestore_emulator.client()
    store = FirestoreStateStore(client, collection=firestore_emulator.unique_collection())
    yield StoreAndQueue(store=store, outbox_queue=None)
    client.close()


@api_key_store_backend
def firestore_keys(firestore_emulator: FirestoreEmulator) -> Iterator[ApiKeyStore]:
    client = firestore_emulator.client()
    yield FirestoreApiKeyStore(client, collection=firestore_emulator.unique_collection())
    client.close()


@io_manager_backend
def gcs_io(storage_emulator: StorageEmulator) -> Iterator[IOManager]:
    client = storage_emulator.client()
    bucket = client.create_bucket(storage_emulator.unique_bucket_name())
    yield GcsIOManager(client, bucket=bucket.name, prefix="relay/")
    for blob in client.list_blobs(bucket):
        blob.delete()
    bucket.delete()
    client.close()


@push_queue_backend
def cloud_tasks_queue(
    tasks_emulator: TasksEmulator, push_receiver: PushReceiver
) -> Iterator[PushQueueUnderTest]:
    client = tasks_emulator.client()
    with tasks_emulator.queue(client) as queue_path:
        unreachable = CloudTasksQueue.from_settings(
            queue_path=queue_path,
            worker_url=push_receiver.url,
            emulator_host=f"127.0.0.1:{free_port()}",
            timeout_seconds=1.0,
        )
        yield PushQueueUnderTest(
            queue=CloudTasksQueue(client, queue_path=queue_path, worker_url=push_receiver.url),
            receiver=push_receiver,
            missing_queue=CloudTasksQueue(
                client,
                queue_path=tasks_emulator.unique_queue_path(),
                worker_url=push_receiver.url,
                timeout_seconds=2.0,
            ),
            unreachable_queue=unreachable,
            task_name_header="X-CloudTasks-TaskName",
            retry_count_header="X-CloudTasks-TaskRetryCount",
            # gcloud-tasks-emulator 0.6.2 never checks names: a second task of the same
            # name is queued and delivered again (infra/gcp/README.md).
            refuses_duplicate_names=False,
        )
        unreachable.close()
    client.transport.close()
