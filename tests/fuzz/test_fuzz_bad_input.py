"""The audit's hand-made bad input against ``relay dev`` (issue 10, item 9), over raw HTTP.

Huge and deeply nested bodies, unicode and NUL in bodies, keys and paths, long and
multi-line headers, odd idempotency keys, path tricks, bad query values, concurrent
identical starts. Every answer must be below 500; every refusal must leave the SQLite
database (runs, steps, queue: every table) exactly as it was (``check_outcome``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fuzz.stack import (
    FuzzStack,
    check_outcome,
    json_of,
    post_once,
    raw_request,
    start_stack,
)

FREE = "/v1/sagas/fuzz-free/runs"
"""A saga that takes any JSON: what gets refused here is refused by the HTTP layer."""
ORDER = "/v1/sagas/fuzz-order/runs"
"""A saga with a strict input model."""
JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def client(fuzz_stack: FuzzStack) -> Iterator[httpx.Client]:
    with fuzz_stack.client() as http:
        yield http


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'"'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"'


# -- bodies ------------------------------------------------------------------------------

DEEP = 100_000

BODIES = [
    pytest.param(FREE, b'"' + b"a" * (2 * MIB) + b'"', JSON, {413}, id="2MiB-body"),
    pytest.param(FREE, chunks(2 * MIB), JSON, {413}, id="2MiB-chunked-body"),
    pytest.param(FREE, b"[" * DEEP + b"]" * DEEP, JSON, {400}, id="nested-arrays-100k"),
    pytest.param(
        FREE, b'{"a":' * 20_000 + b"1" + b"}" * 20_000, JSON, {400}, id="nested-objects-20k"
    ),
    pytest.param(ORDER, b"[" * DEEP + b"]" * DEEP, JSON, {400}, id="nested-arrays-model"),
    pytest.param(FREE, b'{"x": NaN}', JSON, {400}, id="NaN"),
    pytest.param(FREE, b"[-Infinity]", JSON, {400}, id="Infinity"),
    pytest.param(FREE, b'{"n": ' + b"9" * 5000 + b"}", JSON, {400}, id="5000-digit-int"),
    pytest.param(FREE, b'{"a": "\xff"}', JSON, {400}, id="invalid-utf8"),
    pytest.param(FREE, b'{"a": "\x00"}', JSON, {400}, id="raw-NUL-in-string"),
    pytest.param(FREE, b"\x00", JSON, {400}, id="raw-NUL-body"),
    pytest.param(FREE, b"\xef\xbb\xbf{}", JSON, {400}, id="BOM"),
    pytest.param(FREE, b"", JSON, {400}, id="empty"),
    pytest.param(FREE, b" \n\t ", JSON, {400}, id="blank"),
    pytest.param(FREE, b'{"a": 1', JSON, {400}, id="truncated"),
    pytest.param(ORDER, b"null", JSON, {422}, id="null-for-a-model"),
    pytest.param(ORDER, b'{"customer": "\\u0000", "items": []}', JSON, {422}, id="NUL-model-422"),
    pytest.param(FREE, b'{"a": 1, "a": 2}', JSON, {400}, id="duplicate-keys"),
    pytest.param(FREE, b"{}", {"Content-Type": "text/plain"}, {415}, id="text-plain"),
    pytest.param(
        FREE,
        b"a=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        {415},
        id="form-encoded",
    ),
    pytest.param(FREE, b"{}", {}, {415}, id="no-content-type"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "body", "headers", "expected"), BODIES)
def test_bad_body_is_refused_without_writes(
    quiet: FuzzStack, client: httpx.Client, path: str, body: Any, headers: Any, expected: set[int]
) -> None:
    """A body no saga can take gets its 4xx, and the database does not change."""
    status, _ = check_outcome(quiet, post_once(client, path, body, headers))
    assert status in expected


ACCEPTED_BODIES = [
    pytest.param(FREE, '{"ключ": "ü🙂", "🙂": ["\u202e", "\u0000"]}', id="unicode-keys-values"),
    pytest.param(FREE, '{"\\u0000": "\\u0000"}', id="escaped-NUL-key-and-value"),
    pytest.param(FREE, '"' + "\U0001f642" * 50_000 + '"', id="200KB-of-emoji"),
    pytest.param(FREE, "[" * 200 + "]" * 200, id="nested-200"),
    pytest.param(
        ORDER,
        '{"customer": "a\\u0000b\u202e", "items": [{"sku": "A-1", "quantity": 1}]}',
        id="model-NUL-and-bidi",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "text"), ACCEPTED_BODIES)
def test_odd_but_valid_body_starts_one_run_that_reads_back(
    quiet: FuzzStack, client: httpx.Client, path: str, text: str
) -> None:
    """Unicode and escaped NUL are JSON: the start writes its run only, which reads back."""
    body = text.encode("utf-8", "surrogatepass")
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, answer = check_outcome(quiet, post_once(client, path, body, headers))
    assert status in (202, 400, 422)
    if status == 202:
        run_id = json_of(answer)["run_id"]
        assert client.get(f"/v1/runs/{run_id}").status_code == 200
        assert client.get("/v1/runs", params={"limit": 5}).status_code == 200


UNSTORABLE = [
    # json.loads reads 1e999 as inf: it was stored, and then every view of the run and the
    # whole list (GET /v1/runs, for every caller) answered 500, since JSON has no Infinity.
    pytest.param(b'{"x": 1e999}', id="float-overflow-poisons-the-list"),
    # A lone surrogate parses as JSON but is no UTF-8: the SQLite insert raised (500).
    pytest.param(b'{"a": "\\ud800"}', id="lone-surrogate"),
]


@pytest.mark.slow
@pytest.mark.parametrize("body", UNSTORABLE)
def test_json_that_cannot_be_stored_or_answered_is_refused(tmp_path: Path, body: bytes) -> None:
    """Values JSON can parse but not store or send back are a 400 (on a stack of its own)."""
    stack = start_stack(tmp_path)
    try:
        with stack.client() as client:
            status, _ = check_outcome(stack, post_once(client, FREE, body, JSON))
            assert status == 400
            assert client.get("/v1/runs").status_code == 200
    finally:
        stack.server.stop()


# -- headers -----------------------------------------------------------------------------

KEYS = [
    pytest.param([b""], {400}, id="empty"),
    pytest.param([b"k" * 10_000], {400}, id="10000-chars"),
    pytest.param([b"caf\xc3\xa9"], {400}, id="non-ascii"),
    pytest.param([b"a\x01b"], {400}, id="control-char"),
    pytest.param([b"a\tb"], {400}, id="tab"),
    pytest.param([b"one", b"two"], {400}, id="two-headers"),
    pytest.param([b"k" * 201], {400}, id="201-chars"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("values", "expected"), KEYS)
def test_odd_idempotency_key_is_refused_without_writes(
    quiet: FuzzStack, client: httpx.Client, values: list[bytes], expected: set[int]
) -> None:
    """A key that cannot be part of a run id is a 400 naming the header; nothing is written."""
    headers = [(b"Content-Type", b"application/json")] + [(b"Idempotency-Key", v) for v in values]
    status, answer = check_outcome(quiet, post_once(client, FREE, b"{}", headers))  # type: ignore[arg-type]
    assert status in expected
    assert json_of(answer).get("header") == "Idempotency-Key"


@pytest.mark.slow
@pytest.mark.parametrize(
    "key", [b"k" * 200, b"a b ~!", b"schedule:fuzz-nightly:2027-01-01T03:00:00Z", b"event:x"]
)
def test_printable_idempotency_key_is_accepted(
    quiet: FuzzStack, client: httpx.Client, key: bytes
) -> None:
    """Printable ASCII keys up to 200 characters start (or find) one run."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    status, _ = check_outcome(quiet, post_once(client, FREE, b"{}", headers))
    assert status == 202


def raw(
    stack: FuzzStack, method: str, target: bytes, headers: bytes = b"", body: bytes = b""
) -> Callable[[], tuple[int, bytes]]:
    def send() -> tuple[int, bytes]:
        head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (
            method.encode(),
            target,
        )
        length = b"Content-Length: %d\r\n" % len(body) if body or method == "POST" else b""
        status, _, answer = raw_request(stack.url, head + headers + length + b"\r\n" + body)
        return status, answer

    return send


HEADERS = [
    pytest.param(b"X-Junk: " + b"a" * 100_000 + b"\r\n", id="100KB-header"),
    pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(2000)), id="2000-headers"),
    pytest.param(b"X-Junk: a\r\n  folded\r\n", id="obs-fold-multiline"),
    pytest.param(b"Idempotency-Key: a\r\n b\r\n", id="multiline-idempotency-key"),
    pytest.param(b"X-Junk: a\x00b\r\n", id="NUL-in-header"),
    pytest.param(b"X-Junk: a\rb\r\n", id="bare-CR-in-header"),
    pytest.param(b"Bad Name: v\r\n", id="space-in-name"),
    pytest.param(b"Content-Length: 5\r\nContent-Length: 2\r\n", id="two-content-lengths"),
    pytest.param(b"Content-Length: -1\r\n", id="negative-content-length"),
]


@pytest.mark.slow
@pytest.mark.parametrize("headers", HEADERS)
def test_long_and_malformed_headers_never_fail_the_server(quiet: FuzzStack, headers: bytes) -> None:
    """Huge, many, folded or broken headers: a 4xx, or (the server took them) a normal start."""
    body = b"{}"
    send = raw(quiet, "POST", FREE.encode(), b"Content-Type: application/json\r\n" + headers, body)
    status, _ = check_outcome(quiet, send)
    assert status == 202 or 400 <= status < 500


# -- paths -------------------------------------------------------------------------------

PATHS = [
    pytest.param("GET", b"//v1/runs", {404}, id="double-slash-prefix"),
    pytest.param("GET", b"/v1//runs", {404}, id="double-slash-inside"),
    pytest.param("GET", b"/v1/runs/%2e%2e/%2e%2e/healthz", {404}, id="encoded-dot-dot"),
    pytest.param("GET", b"/v1/runs/..%2f..%2fhealthz", {404}, id="encoded-slash-dot-dot"),
    pytest.param("GET", b"/v1/steps/../runs", {404, 405}, id="raw-dot-dot"),
    pytest.param("GET", b"/v1/runs/%00", {404}, id="NUL-run-id"),
    pytest.param("GET", b"/v1/runs/%ff%fe", {404}, id="invalid-utf8-run-id"),
    pytest.param("GET", b"/v1/runs/%F0%9F%99%82", {404}, id="emoji-run-id"),
    pytest.param("GET", b"/v1/runs/" + b"a" * 8000, {404, 414}, id="8000-char-run-id"),
    pytest.param("POST", b"/v1/sagas/fuzz%2Ffree/runs", {404}, id="encoded-slash-saga"),
    pytest.param("POST", b"/v1/sagas/%00/runs", {404}, id="NUL-saga"),
    pytest.param("POST", b"/v1/sagas/%F0%9F%99%82/runs", {404}, id="emoji-saga"),
    pytest.param("POST", b"/v1/sagas/fuzz-free/runs/%2e%2e", {404, 405}, id="dot-dot-after"),
    pytest.param("POST", b"/v1/sagas/../runs", {404}, id="raw-dot-dot-saga"),
    pytest.param("GET", b"/v1/runs/", {404}, id="trailing-slash-get"),
    pytest.param("POST", FREE.encode() + b"/", {404}, id="trailing-slash-post"),
    pytest.param("POST", b"/v1/steps/", {404}, id="trailing-slash-signed"),
    pytest.param("DELETE", b"/v1/runs", {405}, id="wrong-method"),
    pytest.param("GET", b"*", {400, 404}, id="asterisk-form"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "target", "expected"), PATHS)
def test_path_tricks_are_refused_without_writes(
    quiet: FuzzStack, method: str, target: bytes, expected: set[int]
) -> None:
    """Encoded slashes and dots, NUL, odd bytes, trailing slashes: 404 (no redirect)."""
    headers = b"Content-Type: application/json\r\n" if method == "POST" else b""
    status, _ = check_outcome(
        quiet, raw(quiet, method, target, headers, b"{}" * (method == "POST"))
    )
    assert status in expected


@pytest.mark.slow
def test_no_redirect_echoes_the_request_host(quiet: FuzzStack) -> None:
    """A trailing slash is a 404, never a redirect to the Host the request named."""
    head = b"GET /v1/runs/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    status, answer_head, _ = raw_request(quiet.url, head)
    assert b"evil.example" not in answer_head
    assert status == 404


# -- query values ------------------------------------------------------------------------

QUERIES = [
    pytest.param("limit=-1", {422}),
    pytest.param("limit=0", {422}),
    pytest.param("limit=" + "1" + "0" * 30, {422}),
    pytest.param("limit=" + "9" * 5000, {422}),
    pytest.param("limit=1e3", {422}),
    pytest.param("limit=abc", {422}),
    pytest.param("limit=", {422}),
    pytest.param("limit=%00", {422}),
    pytest.param("limit=%ff", {422}),
    pytest.param("limit=1&limit=junk", {200, 422}),
    pytest.param("limit=%D9%A1%D9%A2", {200, 422}),  # Arabic-Indic digits
    pytest.param("status=junk", {422}),
    pytest.param("status=%00", {422}),
    pytest.param("status=COMPLETED,junk", {422}),
    pytest.param("status=", {200}),
    pytest.param("status=completed", {200}),
    pytest.param("saga=%00", {200}),
    pytest.param("saga=" + "s" * 5000, {200}),
    pytest.param("saga[]=x&status[]=y", {200}),
    pytest.param("%ff=%fe", {200}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("query", "expected"), QUERIES)
def test_bad_query_values_are_refused(quiet: FuzzStack, query: str, expected: set[int]) -> None:
    """``GET /v1/runs`` names the bad parameter in a 422 and never fails; nothing is written."""
    status, answer = check_outcome(quiet, raw(quiet, "GET", b"/v1/runs?" + query.encode()))
    assert status in expected
    if status == 422:
        assert json_of(answer).get("parameter") in ("limit", "status")


@pytest.mark.slow
def test_list_entries_carry_no_input_output_or_error(client: httpx.Client) -> None:
    """List entries are headers only: run_id, saga, status, created_at, updated_at."""
    client.post(FREE, json={"payment_token": "tok_secret"})
    runs = client.get("/v1/runs", params={"limit": 20}).json()["runs"]
    assert runs
    assert {key for run in runs for key in run} == {
        "run_id",
        "saga",
        "status",
        "created_at",
        "updated_at",
    }


# -- concurrency -------------------------------------------------------------------------

THREADS = 16


def start_together(stack: FuzzStack, key: str, bodies: list[bytes]) -> list[httpx.Response]:
    """Send every body at once (a barrier releases the threads together)."""
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def start(body: bytes) -> None:
        with stack.client() as http:
            barrier.wait(timeout=30)
            headers = {"Content-Type": "application/json", "Idempotency-Key": key}
            response = http.post(FREE, content=body, headers=headers)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=start, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(responses) == len(bodies)
    return responses


@pytest.mark.slow
def test_concurrent_identical_starts_make_exactly_one_run(quiet: FuzzStack) -> None:
    """N threads, one Idempotency-Key and body: one run, created once, found N-1 times."""
    before = quiet.db.run_ids()
    responses = start_together(quiet, "same-key-same-body", [b'{"n": 1}'] * THREADS)
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["run_id"] for r in responses}) == 1
    assert sum(r.json()["created"] for r in responses) == 1
    assert len(quiet.db.run_ids() - before) == 1


@pytest.mark.slow
def test_concurrent_starts_with_one_key_and_other_inputs_make_one_run(quiet: FuzzStack) -> None:
    """One key, different bodies: one run is created; every other start is a 409 or finds it."""
    before = quiet.db.run_ids()
    bodies = [b'{"n": %d}' % (i % 2) for i in range(THREADS)]
    responses = start_together(quiet, "same-key-other-bodies", bodies)
    assert {r.status_code for r in responses} <= {202, 409}
    created = [r for r in responses if r.status_code == 202 and r.json()["created"]]
    assert len(created) == 1
    assert len(quiet.db.run_ids() - before) == 1
