"""Guarantees specific to the Firestore state store, beyond the shared port contract.

Run against the real Firestore emulator: the document layout, the TTL stamp, stale caches
across processes, the cost of each operation in reads and writes, error translation,
and the composite indexes the listing queries need.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.domain.records import RunId, RunRecord, StateChange, StepName, StepRecord, VersionCheck
from core.domain.status import RunStatus
from core.errors import ConcurrencyConflict, StoreUnavailable
from infra.gcp.firestore import FirestoreStateStore
from infra.local.runtime.supervisor import free_port
from tests.support.gcp import FirestoreEmulator, environment_variable

T0 = 1_700_000_000.0
NOW = T0 + 10.0
RETENTION = 3600.0
INDEXES = Path(__file__).resolve().parents[2] / "infra" / "gcp" / "firestore.indexes.json"


def make_run(run_id: str = "r-1", status: RunStatus = RunStatus.PENDING) -> RunRecord:
    return RunRecord(
        run_id=RunId(run_id),
        saga="order",
        status=status,
        input={"n": 1},
        definition_hash="sha256:abc",
        created_at=T0,
        updated_at=T0,
    )


def make_steps(run_id: str = "r-1", names: tuple[str, ...] = ("a", "b", "c")) -> list[StepRecord]:
    return [StepRecord(run_id=RunId(run_id), name=StepName(n), updated_at=T0) for n in names]


def claim(step: StepRecord) -> StepRecord:
    return step.claimed(now=NOW, lease_until=NOW + 30, error=None)


class RequestCounter:
    """Counts Firestore RPCs and billed documents by wrapping the client's API methods.

    Responses come from the emulator unchanged; only the counting is added. A query is
    billed at least one read even when it returns nothing.
    """

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.reads = 0
        self.writes = 0
        api = client._firestore_api
        for name in ("batch_get_documents", "run_query", "run_aggregation_query", "commit"):
            setattr(api, name, self._wrap(name, getattr(api, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "commit":
                self.writes += len(kwargs["request"]["writes"])
                return method(*args, **kwargs)
            responses = list(method(*args, **kwargs))
            if name == "batch_get_documents":
                self.reads += sum(1 for r in responses if "found" in r)
            elif name == "run_query":
                self.reads += max(1, sum(1 for r in responses if "document" in r))
            else:
                self.reads += 1
            return iter(responses)

        return counted

    def take(self) -> tuple[int, int, int]:
        """(RPCs, billed reads, writes) since the last take."""
        result = (sum(self.calls.values()), self.reads, self.writes)
        self.calls.clear()
        self.reads = self.writes = 0
        return result


@pytest.fixture
def firestore_client(firestore_emulator: FirestoreEmulator) -> Iterator[Any]:
    client = firestore_emulator.client()
    yield client
    client.close()


@pytest.fixture
def collection(firestore_emulator: FirestoreEmulator) -> str:
    return firestore_emulator.unique_collection()


@pytest.fixture
def store(firestore_client: Any, collection: str) -> FirestoreStateStore:
    return FirestoreStateStore(firestore_client, collection=collection, retention_seconds=RETENTION)


def raw(client: Any, *path: str) -> dict[str, Any]:
    snapshot = client.document(*path).get()
    assert snapshot.exists, "/".join(path)
    document: dict[str, Any] = snapshot.to_dict()
    return document


def test_documents_are_laid_out_as_header_and_step_subcollection(
    store: FirestoreStateStore, firestore_client: Any, collection: str
) -> None:
    """A run is <collection>/<run id> plus <collection>/<run id>/steps/<step>, ids escaped."""
    run = make_run("orders/2024%1")
    store.create_run(run=run, steps=make_steps(run.run_id, ("__init__", "ship[0]")), outbox=())

    header = raw(firestore_client, collection, "orders%2F2024%251")
    step = raw(firestore_client, collection, "orders%2F2024%251", "steps", "%5F_init__")

    assert header["run_id"] == "orders/2024%1"
    assert header["input"] == '{"n":1}'  # JSON text, not a Firestore map
    assert header["version"] == 1
    assert header["expires_at"] is None
    assert step["name"] == "__init__"
    assert (
        raw(firestore_client, collection, "orders%2F2024%251", "steps", "ship[0]")["version"] == 1
    )


def test_finishing_a_run_stamps_header_and_every_step_for_ttl(
    store: FirestoreStateStore, firestore_client: Any, collection: str
) -> None:
    """A terminal header gets expires_at, and so does every step; a retry removes them."""
    store.create_run(run=make_run(), steps=make_steps(), outbox=())
    snapshot = store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    failed = snapshot.run.failed(now=NOW, error="boom")
    a_done = snapshot.step("a").failed(now=NOW, error="boom")

    store.apply(change=StateChange(run_id=RunId("r-1"), run=failed, steps=(a_done,)))

    expected = datetime.fromtimestamp(NOW + RETENTION, UTC)
    assert raw(firestore_client, collection, "r-1")["expires_at"] == expected
    for name in ("a", "b", "c"):
        assert raw(firestore_client, collection, "r-1", "steps", name)["expires_at"] == expected

    reopened = failed.retried(
        now=NOW + 1, definition_hash=failed.definition_hash, is_compensating=False
    )
    store.apply(change=StateChange(run_id=RunId("r-1"), run=reopened))

    assert raw(firestore_client, collection, "r-1")["expires_at"] is None
    for name in ("a", "b", "c"):
        assert raw(firestore_client, collection, "r-1", "steps", name)["expires_at"] is None
    after = store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.run == reopened
    assert after.step("a") == a_done


def test_step_write_without_header_keeps_the_ttl_stamp(
    store: FirestoreStateStore, firestore_client: Any, collection: str
) -> None:
    """A late step write to a finished run does not un-stamp the step (it would never expire)."""
    store.create_run(run=make_run(status=RunStatus.COMPENSATED), steps=make_steps(), outbox=())
    snapshot = store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None

    store.apply(change=StateChange(run_id=RunId("r-1"), steps=(claim(snapshot.step("a")),)))

    stamped = datetime.fromtimestamp(T0 + RETENTION, UTC)
    assert raw(firestore_client, collection, "r-1", "steps", "a")["expires_at"] == stamped


def test_stale_cache_in_another_process_still_conflicts(
    firestore_emulator: FirestoreEmulator, store: FirestoreStateStore, collection: str
) -> None:
    """Two store instances (two workers): the one whose cached version is stale loses."""
    other_client = firestore_emulator.client()
    try:
        other = FirestoreStateStore(other_client, collection=collection)
        store.create_run(run=make_run(), steps=make_steps(), outbox=())
        mine = store.load_run(run_id=RunId("r-1"))
        theirs = other.load_run(run_id=RunId("r-1"))
        assert mine is not None and theirs is not None

        other.apply(change=StateChange(run_id=RunId("r-1"), steps=(claim(theirs.step("a")),)))
        stale = "step 'a': expected version 1, found version 2"
        with pytest.raises(ConcurrencyConflict, match=stale):
            store.apply(change=StateChange(run_id=RunId("r-1"), steps=(claim(mine.step("a")),)))
    finally:
        other_client.close()


def test_document_touched_without_a_version_change_is_not_a_conflict(
    store: FirestoreStateStore, firestore_client: Any, collection: str
) -> None:
    """A write that leaves the version alone (a TTL stamp) fails the cached precondition,
    but the store re-reads, sees the version it expected, and commits."""
    store.create_run(run=make_run(), steps=make_steps(), outbox=())
    snapshot = store.load_run(run_id=RunId("r-1"))
    assert snapshot is not None
    firestore_client.document(collection, "r-1", "steps", "b").update({"expires_at": None})

    done = claim(snapshot.step("a"))
    store.apply(
        change=StateChange(
            run_id=RunId("r-1"), steps=(done,), checks=(VersionCheck(StepName("b"), 1),)
        )
    )

    after = store.load_run(run_id=RunId("r-1"))
    assert after is not None
    assert after.step("a") == done


def test_reads_and_writes_per_operation(
    store: FirestoreStateStore, firestore_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cost model in infra/gcp/README.md: a claim and a commit after a load read nothing."""
    counter = RequestCounter(firestore_client)
    steps = make_steps(names=("a", "b", "c", "d", "e"))

    store.create_run(run=make_run(), steps=steps, outbox=())
    create = counter.take()
    snapshot = store.load_run(run_id=RunId("r-1"))
    load = counter.take()
    assert snapshot is not None
    claimed = claim(snapshot.step("a"))
    running = snapshot.run.running(now=NOW)
    store.apply(change=StateChange(run_id=RunId("r-1"), run=running, steps=(claimed,)))
    claim_cost = counter.take()
    done = claimed.succeeded(now=NOW, output=None)
    store.apply(
        change=StateChange(
            run_id=RunId("r-1"), steps=(done,), checks=(VersionCheck(StepName("b"), 1),)
        )
    )
    commit = counter.take()
    cold = FirestoreStateStore(firestore_client, collection=store.describe()["collection"])
    fresh = cold.load_run(run_id=RunId("r-1"))
    assert fresh is not None
    counter.take()
    cold_store = FirestoreStateStore(firestore_client, collection=store.describe()["collection"])
    cold_store.apply(change=StateChange(run_id=RunId("r-1"), steps=(claim(fresh.step("b")),)))
    uncached = counter.take()

    with capsys.disabled():
        print(
            "\nFirestore cost (RPCs, reads, writes) for a 5-step run: "
            f"create={create} load={load} claim={claim_cost} commit+1 check={commit} "
            f"claim without a cached version={uncached}"
        )
    assert create == (1, 0, 6)
    assert load == (2, 6, 0)
    assert claim_cost == (1, 0, 2)
    assert commit == (1, 0, 2)
    assert uncached == (2, 1, 1)


def test_unreachable_firestore_raises_store_unavailable() -> None:
    """No server at the endpoint: StoreUnavailable (retryable) within the timeout, chained."""
    from google.cloud import firestore

    with environment_variable("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}"):
        client = firestore.Client(project="relay-test")
    try:
        store = FirestoreStateStore(client, timeout_seconds=1.0)
        with pytest.raises(StoreUnavailable, match=r"emulator 127\.0\.0\.1") as info:
            store.load_run(run_id=RunId("r-1"))
        assert info.value.__cause__ is not None
        assert StoreUnavailable.retryable
    finally:
        client.close()


def test_describe_names_project_collection_and_endpoint(
    store: FirestoreStateStore, firestore_emulator: FirestoreEmulator, collection: str
) -> None:
    """describe() says where the store points, for logs and error messages."""
    described = store.describe()

    assert described["project"] == firestore_emulator.project
    assert described["collection"] == collection
    assert described["endpoint"] == f"emulator {firestore_emulator.host}"


def test_index_file_declares_an_index_for_every_listing_query() -> None:
    """Production Firestore refuses a query without its composite index; the file has each."""
    declared = json.loads(INDEXES.read_text())
    shapes = {
        tuple((f["fieldPath"], f["order"]) for f in index["fields"])
        for index in declared["indexes"]
        if index["collectionGroup"] == "relay_runs" and index["queryScope"] == "COLLECTION"
    }
    newest_first = (("created_at", "DESCENDING"), ("run_id", "DESCENDING"))

    assert newest_first in shapes
    assert (("saga", "ASCENDING"), *newest_first) in shapes
    assert (("status", "ASCENDING"), *newest_first) in shapes
    assert (("saga", "ASCENDING"), ("status", "ASCENDING"), *newest_first) in shapes
    ttl = {
        (o["collectionGroup"], o["fieldPath"]) for o in declared["fieldOverrides"] if o.get("ttl")
    }
    assert ttl == {("relay_runs", "expires_at"), ("steps", "expires_at")}
