"""The OpenAPI document itself (``functions/http/openapi.py``): valid, complete, lazy, true.

In-process and fast: the document is valid OpenAPI 3.1, names every route the app serves
(and only those), gives each saga its input model, is built on the first request only,
and the views the handlers send validate against the models it is made of.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from openapi_spec_validator import validate  # locked in requirements-dev.txt (via moto)
from starlette.routing import Route

from core.domain.audit import AuditEntry
from core.domain.records import RunRecord, RunSnapshot, StepRecord
from core.domain.status import RunStatus, StepStatus
from core.engine.engine import Engine
from core.registry import SagaRegistry
from functions.bundle import SAGA_MODULES
from functions.http import openapi
from functions.http.app import ADMIN, ALL_ROUTES, PUBLIC_API, WORKER, create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from functions.http.openapi import OPENAPI_PATH, build_document
from functions.http.schemas import AuditEntry as AuditEntryModel
from functions.http.schemas import RunHeader, RunView, StepView
from functions.http.views import run_list_view, run_view
from infra.memory.state_store import MemoryStateStore
from infra.memory.task_queue import MemoryTaskQueue
from tests.fuzz import fuzz_sagas
from tests.support.entry_points import TestClient

FUZZ_SAGAS = (fuzz_sagas.order, fuzz_sagas.free, fuzz_sagas.nightly)
OPEN = OpenAuthenticator("local")


@pytest.fixture
def engine() -> Iterator[Engine]:
    built = Engine(
        registry=SagaRegistry({saga.name: saga for saga in FUZZ_SAGAS}),
        store=MemoryStateStore(),
        queue=MemoryTaskQueue(),
    )
    yield built
    built.close()


def test_document_of_the_bundle_is_valid_openapi_3_1() -> None:
    """The bundle's sagas, every route group: a valid OpenAPI 3.1 document."""
    document = build_document(SagaRegistry(SAGA_MODULES).loaded(), include=ALL_ROUTES)
    validate(document)
    assert document["openapi"] == "3.1.0"
    for name in SAGA_MODULES:
        operation = document["paths"][f"/v1/sagas/{name}/runs"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].startswith("#/components/schemas/")


@pytest.mark.parametrize("include", [ALL_ROUTES, frozenset({PUBLIC_API}), frozenset({WORKER})])
def test_document_names_every_route_the_app_serves_and_no_other(
    engine: Engine, include: frozenset[str]
) -> None:
    """Each served route (templated) is a path of the document with the same methods."""
    app = create_app(
        engine=lambda: engine, verifier=HmacVerifier(b"k"), authenticator=OPEN, include=include
    )
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    document = build_document(FUZZ_SAGAS, include=include)
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if "{" in path or not path.startswith(("/v1/sagas/", "/v1/schedules/"))
    }
    assert documented == served


def test_route_group_names_match_the_app() -> None:
    """openapi.py spells the app's route groups itself (app.py imports it): they agree."""
    assert (openapi.PUBLIC_API, openapi.WORKER, openapi.ADMIN) == (PUBLIC_API, WORKER, ADMIN)
    assert frozenset({openapi.PUBLIC_API, openapi.WORKER, openapi.ADMIN}) == ALL_ROUTES


def test_openapi_json_is_built_on_first_request_and_cached(engine: Engine) -> None:
    """The route builds the document once, from the engine's registry."""
    calls: list[int] = []

    def factory() -> Engine:
        calls.append(1)
        return engine

    app = create_app(
        engine=factory, verifier=HmacVerifier(b"k"), authenticator=OPEN, include=ALL_ROUTES
    )
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert calls == []
        first = client.get(OPENAPI_PATH)
        second = client.get(OPENAPI_PATH)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert "/v1/sagas/fuzz-order/runs" in first.json()["paths"]
    assert "/v1/schedules/fuzz-nightly" in first.json()["paths"]
    assert len(calls) == 1


def test_importing_the_app_builds_no_model() -> None:
    """Nothing heavy at import: the response models load with the first document."""
    code = "import sys, functions.http.app; print('functions.http.schemas' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_views_validate_against_the_documented_models() -> None:
    """What views.py sends for a run, its steps and a list entry are the documented models."""
    run = RunRecord(
        run_id="r-1",  # type: ignore[arg-type]
        saga="fuzz-order",
        status=RunStatus.FAILED,
        input={"customer": "c"},
        definition_hash="h",
        created_at=1.5,
        updated_at=2.25,
        error="StepError: failed",
        audit=(AuditEntry(action="retry", actor="hmac:local", source="127.0.0.1", at=3.0),),
    )
    steps = {
        "reserve": StepRecord(run_id=run.run_id, name="reserve", status=StepStatus.FAILED),  # type: ignore[arg-type]
        "charge": StepRecord(
            run_id=run.run_id,
            name="charge",  # type: ignore[arg-type]
            status=StepStatus.SUCCEEDED,
            attempt=2,
            started_at=1.75,
            finished_at=2.0,
            output={"x": 1},
        ),
    }
    view = run_view(RunSnapshot(run=run, steps=steps), ["reserve", "charge"])  # type: ignore[arg-type]
    RunView.model_validate(view)
    RunHeader.model_validate(run_list_view(run))
    # Field for field: a key added to a view (or a model) without the other is caught here.
    assert set(view) == set(RunView.model_fields)
    assert {key for step in view["steps"] for key in step} == set(StepView.model_fields)
    assert set(run_list_view(run)) == set(RunHeader.model_fields)
    assert set(view["audit"][0]) == set(AuditEntryModel.model_fields)
