"""Guarantees specific to the Cloud Storage I/O manager, beyond the shared port contract.

Run against the real storage emulator: the object layout and references, save order
kept by order markers, error translation, and the lazy import of the client library.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import ConfigurationError, StoreUnavailable
from infra.gcp.gcs_io import GcsIOManager
from infra.local.runtime.supervisor import free_port
from tests.support.gcp import StorageEmulator, environment_variable


@pytest.fixture
def storage_client(storage_emulator: StorageEmulator) -> Iterator[Any]:
    client = storage_emulator.client()
    yield client
    client.close()


@pytest.fixture
def bucket(storage_client: Any, storage_emulator: StorageEmulator) -> Iterator[Any]:
    created = storage_client.create_bucket(storage_emulator.unique_bucket_name())
    yield created
    for blob in storage_client.list_blobs(created):
        blob.delete()
    created.delete()


def names(client: Any, bucket: Any) -> list[str]:
    return sorted(blob.name for blob in client.list_blobs(bucket))


def test_objects_are_laid_out_per_run_and_step(storage_client: Any, bucket: Any) -> None:
    """Results are <prefix><run>/<step>/<id>.json|.pkl, with one order marker each."""
    manager = GcsIOManager(storage_client, bucket=bucket.name, prefix="relay/")

    ref = manager.save(run_id="r-1", step="extract", result_id="0", value={"a": 1})
    manager.save(run_id="r-1", step="extract", result_id="1", value={1}, serializer="pickle")
    manager.save(run_id="r-1", step="extract", result_id="0", value={"a": 2})

    assert ref == f"gs://{bucket.name}/relay/r-1/extract/0.json"
    assert bucket.blob("relay/r-1/extract/0.json").download_as_bytes() == b'{"a":2}'
    stored = names(storage_client, bucket)
    assert [n for n in stored if "/_order/" not in n] == [
        "relay/r-1/extract/0.json",
        "relay/r-1/extract/1.pkl",
    ]
    markers = [n.rsplit("/", 1)[1] for n in stored if "/_order/" in n]
    assert [m.split("-", 1)[1] for m in markers] == ["0", "1"]  # one per result, in order


def test_order_survives_a_new_manager(storage_client: Any, bucket: Any) -> None:
    """Save order lives in the bucket, not in the process: another instance lists it too."""
    first = GcsIOManager(storage_client, bucket=bucket.name)
    for result_id in ["b", "a", "c"]:
        first.save(run_id="r-1", step="s", result_id=result_id, value=result_id)

    second = GcsIOManager(storage_client, bucket=bucket.name)

    assert second.list_results(run_id="r-1", step="s") == ["b", "a", "c"]


def test_missing_bucket_is_a_configuration_error(storage_client: Any) -> None:
    """Saving into a bucket that does not exist says so, and is not retried as transient."""
    manager = GcsIOManager(storage_client, bucket="relay-test-no-such-bucket")

    with pytest.raises(ConfigurationError, match="relay-test-no-such-bucket"):
        manager.save(run_id="r-1", step="s", result_id="0", value=0)


def test_unreachable_storage_raises_store_unavailable() -> None:
    """No server at the endpoint: StoreUnavailable (retryable) within the timeout, chained."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    endpoint = f"http://127.0.0.1:{free_port()}"
    with environment_variable("STORAGE_EMULATOR_HOST", endpoint):
        client = storage.Client(project="test", credentials=AnonymousCredentials())
    try:
        manager = GcsIOManager(client, bucket="b", timeout_seconds=1.0)
        with pytest.raises(StoreUnavailable, match="bucket=b") as info:
            manager.load(run_id="r-1", step="s", result_id="0")
        assert info.value.__cause__ is not None
    finally:
        client.close()


def test_describe_names_bucket_prefix_and_endpoint(
    storage_client: Any, bucket: Any, storage_emulator: StorageEmulator
) -> None:
    """describe() says where results go, for logs and error messages."""
    described = GcsIOManager(storage_client, bucket=bucket.name, prefix="p/").describe()

    assert described["bucket"] == bucket.name
    assert described["prefix"] == "p/"
    assert described["endpoint"] == storage_emulator.endpoint


def test_marking_a_finished_run_rewrites_objects_as_they_were(
    storage_client: Any, bucket: Any
) -> None:
    """Every object of the run (order markers too) is written again with its bytes and type.

    The custom time it carries is what the lifecycle rule reads; the storage emulator drops
    object metadata, so only the rewrite itself is visible here.
    """
    manager = GcsIOManager(storage_client, bucket=bucket.name, prefix="relay/")
    manager.save(run_id="r-1", step="s", result_id="0", value={"a": 1})
    manager.save(run_id="r-1", step="s", result_id="1", value={1}, serializer="pickle")
    manager.save(run_id="r-2", step="s", result_id="0", value=0)
    # The raw timeCreated: the emulator's is not RFC 3339, which the parsed property expects.
    before = {b.name: b._properties["timeCreated"] for b in storage_client.list_blobs(bucket)}

    assert manager.mark_run_finished(run_id="r-1", finished_at=1_800_000_000.0) == 2

    after = {b.name: b for b in storage_client.list_blobs(bucket)}
    assert sorted(after) == sorted(before)
    rewritten = {n for n, b in after.items() if b._properties["timeCreated"] != before[n]}
    assert rewritten == {n for n in before if n.startswith("relay/r-1/")}
    assert after["relay/r-1/s/0.json"].content_type == "application/json"
    assert after["relay/r-1/s/1.pkl"].content_type == "application/x-python-pickle"
    assert manager.load(run_id="r-1", step="s", result_id="1") == {1}
