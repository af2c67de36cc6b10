"""Schemathesis against ``relay dev`` over its own ``/openapi.json`` (issue 10, item 9).

Every operation of the document gets a fixed, reproducible budget of generated requests,
valid and invalid (derandomized: the same requests every run), signed like the local
dispatcher signs when the route wants a signature, so the parsers behind the verifier are
fuzzed too. Each answer must be no 5xx and match the document: documented status, content
type, headers and body schema. A refused request must not change the number of runs;
afterwards, every run in the database must be one a request was told about (a 202 with its
id). The hand-made tests (``test_fuzz_bad_input.py``) compare every table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from schemathesis import GenerationMode

from functions.http.app import ALL_ROUTES
from tests.fuzz.generated import MODES, Signer, fuzz_operation, load_schema, operations
from tests.fuzz.stack import REPORTED_RUNS, TALLY, FuzzStack

MAX_EXAMPLES = 30
"""Generated requests per operation and generation mode (positive, negative)."""
KNOWN_FAILURES: dict[tuple[str, str, GenerationMode], str] = {}
"""Operations that fail for a bug another helper owns: strict xfails (rather filter the
requests that meet it: ``generated.KNOWN_BUGS``, with a hand-made strict xfail)."""


def _cases() -> list[Any]:
    cases = []
    for mode in MODES:
        for method, path in operations(ALL_ROUTES):
            reason = KNOWN_FAILURES.get((method, path, mode))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(
                pytest.param(method, path, mode, id=f"{method} {path}-{mode}", marks=marks)
            )
    return cases


@pytest.fixture(scope="session")
def fuzz_schema(fuzz_stack: FuzzStack) -> Any:
    return load_schema(fuzz_stack)


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
def signed_session(fuzz_stack: FuzzStack) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = Signer(fuzz_stack)
        yield session


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_every_generated_request_is_answered_as_documented(
    fuzz_schema: Any,
    fuzz_stack: FuzzStack,
    signed_session: requests.Session,
    compensated_run: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    """No 5xx, and status, content type, headers and body as the document says.

    Valid requests to a run's paths name a real run (random ids would only ever get 404s).
    """
    is_run_path = "{run_id}" in path and mode is GenerationMode.POSITIVE
    fuzz_operation(
        fuzz_schema,
        method,
        path,
        mode,
        session=signed_session,
        db=fuzz_stack.db,
        max_examples=MAX_EXAMPLES,
        path_parameters={"run_id": compensated_run} if is_run_path else None,
    )


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
