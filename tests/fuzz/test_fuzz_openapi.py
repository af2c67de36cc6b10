"""Schemathesis against ``relay dev`` over its own ``/openapi.json`` (issue 10, item 9).

Every operation of the document gets a fixed, reproducible budget of generated requests
(valid and invalid: the seed and ``deterministic`` make the run the same each time), signed
like the local dispatcher signs when the route wants a signature, so the parsers behind the
verifier are fuzzed too. Each answer must be no 5xx and match the document: documented
status, content type, headers and body schema. A refused request must not change the number
of runs; afterwards, every run in the database must be one a request was told about (a 202
with its id). The hand-made tests (``test_fuzz_bad_input.py``) compare every table.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.stack import (
    REPORTED_RUNS,
    TALLY,
    Database,
    FuzzStack,
    is_signed,
    report_runs,
)

MAX_EXAMPLES = 40
"""Generated requests per operation and generation mode (positive, negative): a fixed
budget, drawn the same way every run (``derandomize``)."""
CONFIG = """
[generation]
deterministic = true
database = "none"
"""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class Signer(requests.auth.AuthBase):
    """Signs requests to the signed routes the way the local dispatcher does."""

    def __init__(self, stack: FuzzStack) -> None:
        self._stack = stack

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(request.url or "")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        if is_signed(parts.path):
            body = request.body or b""
            body = body.encode() if isinstance(body, str) else body
            method = request.method or "POST"
            request.headers["X-Relay-Signature"] = self._stack.sign(method, path, body)
        return request


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation of the stack's document, known before it starts.

    The document is built here, in this process, from the same sagas the stack serves (the
    test then fuzzes the one the stack answers): so each operation is a test item of its own.
    """
    from core.registry import SagaRegistry
    from functions.http.app import ALL_ROUTES
    from functions.http.openapi import build_document
    from tests.fuzz import fuzz_sagas

    sagas = SagaRegistry(
        {s.name: s for s in (fuzz_sagas.order, fuzz_sagas.free, fuzz_sagas.nightly)}
    )
    paths = build_document(sagas.loaded(), include=ALL_ROUTES)["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


OPERATIONS = _operations()


@pytest.fixture(scope="session")
def fuzz_schema(fuzz_stack: FuzzStack) -> Any:
    config = schemathesis.Config.from_str(CONFIG)
    return schemathesis.openapi.from_url(f"{fuzz_stack.url}/openapi.json", config=config)


@pytest.fixture(scope="session")
def compensated_run(fuzz_stack: FuzzStack) -> str:
    """A COMPENSATED run of fuzz-order (error, compensation reason, compensated steps)."""
    order = {"customer": "c", "items": [{"sku": "A", "quantity": 1}], "note": "decline"}
    with fuzz_stack.client() as client:
        run_id = str(client.post("/v1/sagas/fuzz-order/runs", json=order).json()["run_id"])
        deadline = time.monotonic() + 30
        while client.get(f"/v1/runs/{run_id}").json()["status"] != "COMPENSATED":
            assert time.monotonic() < deadline, "the declined order did not compensate"
            time.sleep(0.05)
    return run_id


@pytest.fixture(scope="session")
def signed_session(fuzz_stack: FuzzStack) -> Any:
    with requests.Session() as session:
        session.auth = Signer(fuzz_stack)
        yield session


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_generated_request_is_answered_as_documented(
    fuzz_schema: Any,
    fuzz_stack: FuzzStack,
    signed_session: Any,
    compensated_run: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    """No 5xx, and status, content type, headers and body as the document says.

    Valid requests to a run's paths name a real run (random ids would only ever get 404s).
    """
    operation = fuzz_schema[path][method]
    known: dict[str, Any] = {}
    if "{run_id}" in path and mode is GenerationMode.POSITIVE:
        known["path_parameters"] = {"run_id": compensated_run}

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, **known))
    def call_and_check(case: Any) -> None:
        _call_and_check(case, signed_session, fuzz_stack.db)

    try:
        call_and_check()
    except hypothesis.errors.Unsatisfiable:
        # Negative mode on an operation with nothing to get wrong (no parameter, no body).
        assert mode is GenerationMode.NEGATIVE


def _call_and_check(case: Any, session: Any, db: Database) -> None:
    # Runs are created by accepted requests only (the cron fires once a year): a refusal
    # that changes the count wrote a run. Cheap enough to check on every request.
    runs_before = db.count("runs")
    response = case.call(session=session, timeout=30)
    if response.status_code >= 400 and db.count("runs") != runs_before:
        TALLY.add(stray_writes=1)
        TALLY.note(f"{response.status_code} for {case.method} {case.formatted_path} wrote a run")
        raise AssertionError(f"a {response.status_code} answer created a run: {response.text}")
    TALLY.add(requests=1)
    TALLY.answered(f"{case.method} {case.operation.path}", response.status_code)
    if response.status_code >= 500:
        TALLY.add(server_errors=1)
        TALLY.note(f"{response.status_code} for {case.method} {case.formatted_path}")
    report_runs(response.status_code, response.content)
    try:
        case.validate_response(response, checks=CHECKS)
    except BaseException:  # schemathesis's FailureGroup is a BaseExceptionGroup
        if response.status_code < 500:
            TALLY.add(schema_violations=1)
            TALLY.note(
                f"schema violation: {case.method} {case.formatted_path} -> {response.status_code}"
            )
        raise


@pytest.mark.slow
def test_every_stored_run_was_started_by_an_accepted_request(fuzz_stack: FuzzStack) -> None:
    """A run in the database that no 202 reported was written by a refused request."""
    if not REPORTED_RUNS:
        pytest.skip("no request of this session started a run")
    fuzz_stack.db.wait_quiet()
    stray = fuzz_stack.db.run_ids() - REPORTED_RUNS
    orphans = fuzz_stack.db.count("steps", "run_id NOT IN (SELECT run_id FROM runs)")
    TALLY.add(stray_writes=len(stray) + orphans)
    assert not stray, f"runs no accepted request reported: {sorted(stray)[:10]}"
    assert not orphans, f"{orphans} step records of runs that do not exist"
