"""Cloud Logging and Lambda flavours of the JSON log lines, with the request's trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from functions.http.app import RequestContextMiddleware, create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from functions.logs import (
    LABELS_KEY,
    SPAN_ID_KEY,
    TRACE_KEY,
    TRACE_SAMPLED_KEY,
    bind_request,
    configure_logging,
    current_request,
    log_format_from_env,
    parse_trace_headers,
    reset_request,
)
from tests.support.entry_points import TestClient

PROJECT = "relay-test"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
log = logging.getLogger("relay.test")


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Root logging to a buffer in the gcp format; the previous handlers are restored."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, log_format="gcp")
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    """Relay's lines (the test client's own httpx lines are left out)."""
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [entry for entry in parsed if str(entry["logger"]).startswith("relay")]


def logging_app() -> Starlette:
    """An app whose only route logs once in the event loop and once in a worker thread."""

    async def endpoint(request: Request) -> JSONResponse:
        log.info("in the loop", extra={"run_id": "r-1", "saga": "order", "step": "charge"})
        await run_in_threadpool(log.info, "in a thread", extra={"run_id": "r-1"})
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/work", endpoint, methods=["GET"])],
        middleware=[Middleware(RequestContextMiddleware)],
    )


def test_traceparent_gives_trace_span_and_sampled_keys(log_lines: io.StringIO) -> None:
    """A W3C traceparent becomes Cloud Logging's trace, spanId and trace_sampled keys."""
    with TestClient(logging_app()) as client:
        assert client.get("/work", headers={"traceparent": TRACEPARENT}).status_code == 200

    loop_line, thread_line = entries(log_lines)
    for entry in (loop_line, thread_line):
        assert entry[TRACE_KEY] == f"projects/{PROJECT}/traces/{TRACE_ID}"
        assert entry[SPAN_ID_KEY] == "00f067aa0ba902b7"
        assert entry[TRACE_SAMPLED_KEY] is True
        assert entry["severity"] == "INFO"
    assert loop_line["message"] == "in the loop"
    assert loop_line[LABELS_KEY] == {"run_id": "r-1", "saga": "order", "step": "charge"}
    assert (loop_line["run_id"], loop_line["saga"], loop_line["step"]) == ("r-1", "order", "charge")
    assert thread_line[LABELS_KEY] == {"run_id": "r-1"}


def test_x_cloud_trace_context_gives_a_hex_span_id(log_lines: io.StringIO) -> None:
    """The legacy header's decimal span id is written as Cloud Logging's 16 hex digits."""
    header = f"{TRACE_ID.upper()}/12345;o=0"
    with TestClient(logging_app()) as client:
        client.get("/work", headers={"X-Cloud-Trace-Context": header})

    entry = entries(log_lines)[0]
    assert entry[TRACE_KEY] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert entry[SPAN_ID_KEY] == f"{12345:016x}"
    assert entry[TRACE_SAMPLED_KEY] is False


def test_traceparent_wins_over_x_cloud_trace_context() -> None:
    """With both headers (Cloud Run sends both), the W3C one is used."""
    other = "11111111111111111111111111111111/1;o=1"
    context = parse_trace_headers({"traceparent": TRACEPARENT, "X-Cloud-Trace-Context": other})
    assert context.trace_id == TRACE_ID


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "garbage"},
        {"traceparent": f"ff-{TRACE_ID}-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"},
        {"traceparent": f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra"},
        {"X-Cloud-Trace-Context": "not-a-trace/1;o=1"},
        {"X-Cloud-Trace-Context": f"{TRACE_ID}/abc"},
        {"X-Cloud-Trace-Context": "0" * 32 + "/1"},
    ],
    ids=lambda headers: next(iter(headers.values())),
)
def test_a_malformed_header_gives_no_trace_and_no_error(
    log_lines: io.StringIO, headers: dict[str, str]
) -> None:
    """A bad trace header is ignored: the request succeeds and lines carry no trace key."""
    with TestClient(logging_app()) as client:
        assert client.get("/work", headers=headers).status_code == 200

    for entry in entries(log_lines):
        assert TRACE_KEY not in entry and SPAN_ID_KEY not in entry
        assert entry["message"] in ("in the loop", "in a thread")


def test_the_trace_is_reset_after_the_request(log_lines: io.StringIO) -> None:
    """A line logged after the request no longer carries its trace."""
    with TestClient(logging_app()) as client:
        client.get("/work", headers={"traceparent": TRACEPARENT})
    log.info("after")

    assert TRACE_KEY not in entries(log_lines)[-1]
    assert current_request() is None


def test_create_app_binds_the_trace_for_the_engine_thread(log_lines: io.StringIO) -> None:
    """Relay's own app has the middleware: a failure while building the engine is traced."""

    def broken_engine() -> Any:
        log.warning("building the engine", extra={"run_id": "r-9"})
        raise RuntimeError("no engine")

    app = create_app(
        engine=broken_engine,
        verifier=HmacVerifier(b"k" * 32),
        authenticator=OpenAuthenticator("local"),
    )
    with TestClient(app) as client:
        response = client.get("/v1/runs/r-9", headers={"traceparent": TRACEPARENT})

    assert response.status_code == 500
    traced = [entry for entry in entries(log_lines) if entry.get(TRACE_KEY)]
    assert {entry["message"] for entry in traced} >= {"building the engine"}
    assert all(entry[TRACE_KEY].endswith(TRACE_ID) for entry in traced)
    assert any(entry["severity"] == "ERROR" for entry in traced)


def test_without_a_project_there_is_no_trace_key(
    log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trace name needs the project; without GOOGLE_CLOUD_PROJECT the key is left out."""
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    configure_logging("INFO", stream=log_lines, log_format="gcp")
    token = bind_request(headers={"traceparent": TRACEPARENT})
    try:
        log.info("no project", extra={"run_id": "r-2"})
    finally:
        reset_request(token)

    (entry,) = entries(log_lines)
    assert TRACE_KEY not in entry
    assert entry[LABELS_KEY] == {"run_id": "r-2"}


def test_aws_lines_carry_the_lambda_request_id_and_xray_trace(
    log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the aws format, run_id stays top-level beside aws_request_id and xray_trace_id."""
    root = "1-5759e988-bd862e3fe1be46a994272793"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1")
    configure_logging("INFO", stream=log_lines, log_format="aws")
    token = bind_request(aws_request_id="c6af9ac6-7b61-11e6-9a41-93e812345678")
    try:
        inner = bind_request(headers={"traceparent": TRACEPARENT})  # the HTTP middleware
        log.info("step done", extra={"run_id": "r-3"})
        reset_request(inner)
    finally:
        reset_request(token)
    log.info("between invocations")

    first, second = entries(log_lines)
    assert first["run_id"] == "r-3"
    assert first["aws_request_id"] == "c6af9ac6-7b61-11e6-9a41-93e812345678"
    assert first["xray_trace_id"] == root
    assert TRACE_KEY not in first and LABELS_KEY not in first
    assert "aws_request_id" not in second


def test_plain_lines_have_no_platform_keys(log_lines: io.StringIO) -> None:
    """The plain format (local) adds neither Cloud Logging nor Lambda keys."""
    configure_logging("INFO", stream=log_lines, log_format="plain")
    token = bind_request(headers={"traceparent": TRACEPARENT}, aws_request_id="req-1")
    try:
        log.info("local", extra={"run_id": "r-4"})
    finally:
        reset_request(token)

    (entry,) = entries(log_lines)
    assert set(entry) == {"time", "severity", "logger", "message", "run_id"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ("plain", None)),
        ({"RELAY_BACKEND": "gcp"}, ("gcp", None)),
        ({"RELAY_BACKEND": "aws"}, ("aws", None)),
        ({"RELAY_BACKEND": "gcp", "RELAY_LOG_FORMAT": "plain"}, ("plain", None)),
        ({"RELAY_LOG_FORMAT": "GCP"}, ("gcp", None)),
        ({"RELAY_BACKEND": "aws", "RELAY_LOG_FORMAT": "json"}, ("aws", "json")),
    ],
)
def test_the_format_follows_relay_log_format_then_relay_backend(
    environ: dict[str, str], expected: tuple[str, str | None]
) -> None:
    """RELAY_LOG_FORMAT wins; otherwise the backend decides; a typo is reported."""
    assert log_format_from_env(environ) == expected


def test_an_unknown_log_format_is_reported_not_fatal(
    log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELAY_LOG_FORMAT=json logs a warning and uses the backend's format."""
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")
    monkeypatch.setenv("RELAY_BACKEND", "gcp")
    configure_logging("INFO", stream=log_lines)

    (entry,) = entries(log_lines)
    assert "RELAY_LOG_FORMAT='json'" in entry["message"]
    assert entry["severity"] == "WARNING"
