"""GCP adapters (Firestore, GCS) against their emulators, for the contract suites.

The emulators start once per session, lazily (``tests/emulators/gcp.py``); each test gets
its own Firestore collection and its own bucket, so no test sees another's data.
"""

from __future__ import annotations

from collections.abc import Iterator

from core.ports.clock import FixedClock
from core.ports.io_manager import IOManager
from infra.gcp.firestore import FirestoreStateStore
from infra.gcp.gcs_io import GcsIOManager
from tests.contract.registry import StoreAndQueue, io_manager_backend, state_store_backend
from tests.emulators.gcp import (
    FirestoreEmulator,
    StorageEmulator,
    firestore_emulator,
    storage_emulator,
)

__all__ = ["firestore_emulator", "firestore_store", "gcs_io", "storage_emulator"]


@state_store_backend
def firestore_store(
    firestore_emulator: FirestoreEmulator, clock: FixedClock
) -> Iterator[StoreAndQueue]:
    client = firestore_emulator.client()
    store = FirestoreStateStore(client, collection=firestore_emulator.unique_collection())
    yield StoreAndQueue(store=store, outbox_queue=None)
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
