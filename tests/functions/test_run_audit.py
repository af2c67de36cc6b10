"""Operator actions (retry, cancel) are audited: who, from where and when, in the run itself.

The handlers take the principal the delivery verifier established; the CLI records
``cli:<user>``. The trail is part of the run view (readers of the saga only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from core.domain.records import RunId, RunRecord, StepName, StepRecord
from core.domain.status import RunStatus
from core.engine.engine import Engine
from functions.http.app import ALL_ROUTES, create_app
from functions.http.callers import OpenAuthenticator
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import TestClient

ISO = "Z"


class AcceptingVerifier:
    """Accepts every delivery as the principal ``test:operator``."""

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        return "test:operator"


@pytest.fixture
def operator_client(engine: Engine) -> Iterator[TestClient]:
    app = create_app(
        engine=lambda: engine,
        verifier=AcceptingVerifier(),  # type: ignore[arg-type]
        authenticator=OpenAuthenticator("local"),
        include=ALL_ROUTES,
    )
    with TestClient(app) as client:
        yield client


def failed_run(store: SQLiteStateStore, engine: Engine) -> str:
    saga = engine.registry.get("greet")
    run = RunRecord(
        run_id=RunId("r-failed"),
        saga="greet",
        status=RunStatus.FAILED,
        input={"name": "Ada", "times": 1},
        definition_hash=saga.definition_hash,
        created_at=1.0,
        updated_at=1.0,
        error="stopped",
    )
    steps = [StepRecord(RunId("r-failed"), StepName(name)) for name in saga.steps]
    store.create_run(run=run, steps=steps, outbox=())
    return "r-failed"


def test_cancel_and_retry_append_who_from_where_and_when(
    operator_client: TestClient, engine: Engine, sqlite_store: SQLiteStateStore
) -> None:
    """Each action adds one entry, in order, in the same write as the action itself."""
    run_id = failed_run(sqlite_store, engine)

    retried = operator_client.post(f"/v1/runs/{run_id}/retry")
    cancelled = operator_client.post(f"/v1/runs/{run_id}/cancel")

    assert retried.status_code == 200 and cancelled.status_code == 200
    trail = cancelled.json()["audit"]
    assert [entry["action"] for entry in trail] == ["retry", "cancel"]
    assert retried.json()["audit"] == trail[:1]
    for entry in trail:
        assert entry["actor"] == "test:operator"
        assert entry["source"] == "testclient"
        assert entry["at"].endswith(ISO)
    stored = sqlite_store.load_run(run_id=RunId(run_id))
    assert stored is not None and [e.action for e in stored.run.audit] == ["retry", "cancel"]


def test_a_refused_action_adds_no_entry(
    operator_client: TestClient, engine: Engine, sqlite_store: SQLiteStateStore
) -> None:
    """Retrying a run that is not FAILED is 409 and leaves the trail as it was."""
    run_id = failed_run(sqlite_store, engine)
    operator_client.post(f"/v1/runs/{run_id}/retry")

    again = operator_client.post(f"/v1/runs/{run_id}/retry")

    assert again.status_code == 409
    stored = sqlite_store.load_run(run_id=RunId(run_id))
    assert stored is not None and len(stored.run.audit) == 1
