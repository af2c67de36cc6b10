"""Schemathesis, driven by hand: one operation of ``/openapi.json``, a fixed budget, checks.

The schemathesis pytest plugin's lazy loader does not run under pytest 9 (it reads a removed
``Function._nodeid``), and the stack it would test starts in a fixture: so each test item
builds one operation's strategy and runs it under its own Hypothesis settings here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import hypothesis
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

from tests.fuzz.stack import TALLY, Database, FuzzStack, is_signed, report_runs

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
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


KNOWN_BUGS: list[Callable[[Any], bool]] = []
"""Generated requests that meet a bug another helper owns are not sent (each has a strict
xfail of its own that reproduces it); delete an entry once its xfail passes."""


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


def operations(include: frozenset[str]) -> list[tuple[str, str]]:
    """(method, path) of every operation the fuzz stack documents for ``include``.

    Built in this process from the sagas the stack serves, before it starts, so each
    operation is a test item of its own; the tests then fuzz the document the stack serves.
    """
    from core.registry import SagaRegistry
    from functions.http.openapi import build_document
    from tests.fuzz import fuzz_sagas

    sagas = SagaRegistry(
        {s.name: s for s in (fuzz_sagas.order, fuzz_sagas.free, fuzz_sagas.nightly)}
    )
    paths = build_document(sagas.loaded(), include=include)["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


def load_schema(stack: FuzzStack, *, headers: Mapping[str, str] | None = None) -> Any:
    """The stack's own ``/openapi.json``, as schemathesis reads it.

    ``headers`` carry a run API credential where the stack wants one (the document is for
    run API callers only).
    """
    config = schemathesis.Config.from_str(CONFIG)
    url = f"{stack.url}/openapi.json"
    return schemathesis.openapi.from_url(url, config=config, headers=dict(headers or {}))


def fuzz_operation(
    schema: Any,
    method: str,
    path: str,
    mode: GenerationMode,
    *,
    session: requests.Session,
    db: Database,
    max_examples: int,
    path_parameters: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send ``max_examples`` generated requests of one operation (derandomized) and check each.

    ``path_parameters`` and ``headers`` are fixed in every request (a real run id, a key).
    """
    operation = schema[path][method]
    fixed: dict[str, Any] = {}
    if path_parameters:
        fixed["path_parameters"] = dict(path_parameters)
    if headers:
        fixed["headers"] = dict(headers)

    @hypothesis.settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def call_and_check(case: Any) -> None:
        if any(is_known(case) for is_known in KNOWN_BUGS):
            hypothesis.reject()
        call_and_validate(case, session, db)

    try:
        call_and_check()
    except hypothesis.errors.Unsatisfiable:
        # Negative mode on an operation with nothing to get wrong (no parameter, no body).
        assert mode is GenerationMode.NEGATIVE


def call_and_validate(case: Any, session: requests.Session, db: Database) -> None:
    """Send one case; no 5xx, no run from a refusal, and the answer as documented."""
    # Runs are created by accepted requests only (the cron fires once a year): a refusal
    # that changes the count wrote a run. Cheap enough to check on every request.
    runs_before = db.count("runs")
    response = case.call(session=session, timeout=30)
    TALLY.add(requests=1)
    TALLY.answered(f"{case.method} {case.operation.path}", response.status_code)
    if response.status_code >= 400 and db.count("runs") != runs_before:
        TALLY.add(stray_writes=1)
        TALLY.note(f"{response.status_code} for {case.method} {case.formatted_path} wrote a run")
        raise AssertionError(f"a {response.status_code} answer created a run: {response.text}")
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
