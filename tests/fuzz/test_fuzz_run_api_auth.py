"""The run API behind API keys (``RELAY_API_AUTH=api_key``), fuzzed (issue 10, items 1 and 9).

A second ``relay dev`` with keys made by ``relay keys create``: malformed, unknown, wrong,
revoked and under-granted credentials are a 401/403 that writes nothing; grants decide
what a caller starts and reads (a run of another saga is a 404, the list shows only
readable sagas); and schemathesis fuzzes the run API with a key, every answer as the
document says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from schemathesis import GenerationMode

from functions.http.app import PUBLIC_API
from tests.fuzz.generated import MODES, fuzz_operation, load_schema, operations
from tests.fuzz.stack import (
    ROOT,
    FuzzStack,
    check_outcome,
    post_once,
    stack_environment,
    start_stack,
)

FREE = "/v1/sagas/fuzz-free/runs"
ORDER = "/v1/sagas/fuzz-order/runs"
AN_ORDER = {"customer": "c", "items": [{"sku": "A", "quantity": 1}]}
MAX_EXAMPLES = 15
"""Generated requests per run API operation and mode (the open stack gets more)."""


def relay(data_dir: Path, *args: str) -> str:
    """``relay`` (the CLI) on the stack's data dir; its standard output."""
    command = [sys.executable, "-m", "tooling.cli", *args]
    env = stack_environment(data_dir)
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Keys:
    """The API keys of the keyed stack, by what they may do."""

    def __init__(self, data_dir: Path) -> None:
        def create(grant: str) -> dict[str, Any]:
            created = json.loads(relay(data_dir, "keys", "create", "--grant", grant, "--json"))
            assert isinstance(created, dict)
            return created

        self.free = create("fuzz-free:start,read")["key"]
        self.order = create("fuzz-order:start,read")["key"]
        self.reader = create("fuzz-free:read")["key"]
        revoked = create("fuzz-free:start,read")
        relay(data_dir, "keys", "revoke", revoked["key_id"])
        self.revoked = revoked["key"]
        self.wrong_secret = self.free[:-4] + ("aaaa" if not self.free.endswith("aaaa") else "bbbb")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FuzzStack, Keys]]:
    """``relay dev`` whose run API wants API keys, and its keys."""
    tmp_path = tmp_path_factory.mktemp("keyed")
    keys = Keys(tmp_path / "data")
    stack = start_stack(tmp_path, RELAY_API_AUTH="api_key")
    try:
        yield stack, keys
    finally:
        stack.server.stop()


@pytest.fixture(scope="module")
def client(keyed: tuple[FuzzStack, Keys]) -> Iterator[httpx.Client]:
    with keyed[0].client() as http:
        yield http


def _credentials(keys: Keys) -> dict[str, list[tuple[bytes, bytes]]]:
    bearer = b"Authorization"
    return {
        "none": [],
        "empty-bearer": [(bearer, b"Bearer")],
        "bearer-prefix-only": [(bearer, b"Bearer rk_")],
        "unknown-key": [(bearer, b"Bearer rk_nope_nope")],
        "wrong-secret": [(bearer, b"Bearer " + keys.wrong_secret.encode())],
        "revoked": [(bearer, b"Bearer " + keys.revoked.encode())],
        "read-only-grant": [(bearer, b"Bearer " + keys.reader.encode())],
        "other-saga-grant": [(bearer, b"Bearer " + keys.order.encode())],
        "non-ascii-bearer": [(bearer, b"Bearer rk_\xb2\xff_x")],
        "huge-bearer": [(bearer, b"Bearer " + b"a" * 10_000)],
        "spaces-in-bearer": [(bearer, b"Bearer a b c")],
        "jwt-shaped": [(bearer, b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")],
        "basic": [(bearer, b"Basic dXNlcjpwYXNz")],
        "empty-api-key": [(b"X-Api-Key", b"")],
        "non-ascii-api-key": [(b"X-Api-Key", b"rk_\xe9_\xe9")],
        "two-api-keys": [(b"X-Api-Key", keys.reader.encode()), (b"X-Api-Key", b"rk_x_y")],
        "key-in-query-only": [],
    }


CREDENTIALS = [
    "none",
    "empty-bearer",
    "bearer-prefix-only",
    "unknown-key",
    "wrong-secret",
    "revoked",
    "read-only-grant",
    "other-saga-grant",
    "non-ascii-bearer",
    "huge-bearer",
    "spaces-in-bearer",
    "jwt-shaped",
    "basic",
    "empty-api-key",
    "non-ascii-api-key",
    "two-api-keys",
    "key-in-query-only",
]


@pytest.mark.slow
@pytest.mark.parametrize("credential", CREDENTIALS)
def test_start_without_a_valid_granted_key_is_refused_without_writes(
    keyed: tuple[FuzzStack, Keys], client: httpx.Client, credential: str
) -> None:
    """No key, a bad key, a revoked key or a key without the grant: 401/403, no writes."""
    stack, keys = keyed
    headers = [(b"Content-Type", b"application/json"), *_credentials(keys)[credential]]
    path = FREE + (f"?api_key={keys.free}" if credential == "key-in-query-only" else "")

    status, _ = check_outcome(stack, post_once(client, path, b"{}", headers))
    assert status in (401, 403)


@pytest.mark.slow
def test_grants_decide_what_a_key_starts_and_reads(
    keyed: tuple[FuzzStack, Keys], client: httpx.Client
) -> None:
    """A key starts and reads its sagas only; another saga's run is not found for it."""
    _, keys = keyed
    free = {"Authorization": f"Bearer {keys.free}"}
    order = {"X-Api-Key": keys.order}
    free_run = client.post(FREE, json={"n": 1}, headers=free)
    order_run = client.post(ORDER, json=AN_ORDER, headers=order)
    assert free_run.status_code == order_run.status_code == 202
    assert client.get(f"/v1/runs/{order_run.json()['run_id']}", headers=free).status_code == 404
    assert client.get(f"/v1/runs/{free_run.json()['run_id']}", headers=free).status_code == 200
    listed = client.get("/v1/runs", headers=free)
    assert listed.status_code == 200
    assert {run["saga"] for run in listed.json()["runs"]} == {"fuzz-free"}
    assert client.get("/v1/runs", params={"saga": "fuzz-order"}, headers=free).status_code in (
        403,
        200,
    )
    assert client.get("/v1/runs").status_code == 401


RUN_API = [
    pytest.param(method, path, mode, id=f"{method} {path}-{mode}")
    for mode in MODES
    for method, path in operations(frozenset({PUBLIC_API}))
    if path.startswith("/v1/")
]


@pytest.fixture(scope="module")
def keyed_schema(keyed: tuple[FuzzStack, Keys]) -> Any:
    stack, keys = keyed
    return load_schema(stack, headers={"Authorization": f"Bearer {keys.reader}"})


@pytest.mark.slow
def test_the_document_is_for_run_api_callers_only(
    keyed: tuple[FuzzStack, Keys], client: httpx.Client
) -> None:
    """``/openapi.json`` names every saga and its input: 401 without a key, 403 with a bad one."""
    _, keys = keyed

    def document(headers: dict[str, str]) -> int:
        return client.get("/openapi.json", headers=headers).status_code

    assert document({}) == 401
    assert document({"Authorization": f"Bearer {keys.revoked}"}) == 403
    assert document({"X-Api-Key": keys.reader}) == 200


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), RUN_API)
def test_run_api_with_a_key_is_answered_as_documented(
    keyed: tuple[FuzzStack, Keys], keyed_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    """Generated requests with a fuzz-free key: no 5xx, 403 for other sagas, as documented."""
    stack, keys = keyed
    with requests.Session() as session:
        fuzz_operation(
            keyed_schema,
            method,
            path,
            mode,
            session=session,
            db=stack.db,
            max_examples=MAX_EXAMPLES,
            headers={"X-Api-Key": keys.free},
        )
