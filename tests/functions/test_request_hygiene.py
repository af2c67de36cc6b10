"""Request hygiene: Content-Type, strict JSON, no trailing-slash redirect, no echoed headers.

Issue 10, finding 10 and DESIGN item 7: POST bodies are ``application/json`` (415 else),
JSON with repeated keys, NaN/Infinity, deep nesting or numbers beyond 64 bits is a 400
naming what is wrong, and a path with a trailing slash is a plain 404 (the redirect echoed
the request's Host). Every refusal writes nothing.
"""

from __future__ import annotations

import base64

import pytest

from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import TestClient, assert_nothing_written, json_body, signed

START = "/v1/sagas/greet/runs"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "multipart/form-data; boundary=x",
        "application/json\r\nX-Injected: 1",
    ],
    ids=["missing", "text", "form", "jsonx", "multipart", "injected"],
)
def test_start_with_a_body_that_is_not_declared_json_is_415(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    content_type: str | None,
) -> None:
    """A body without ``Content-Type: application/json`` is 415, never echoing the header."""
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = client.post(START, content=b'{"name": "Ada"}', headers=headers)

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert "X-Injected" not in response.text
    assert "x-injected" not in response.headers
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_with_or_without_charset_is_accepted(client: TestClient, content_type: str) -> None:
    """The media type is compared case-insensitively; parameters such as charset are fine."""
    response = client.post(
        START, content=b'{"name": "Ada"}', headers={"Content-Type": content_type}
    )

    assert response.status_code == 202


def test_two_content_type_headers_are_415(client: TestClient) -> None:
    """Which of two Content-Type headers counts would be a guess."""
    headers = [("content-type", "application/json"), ("content-type", "text/plain")]

    assert client.post(START, content=b'{"name": "Ada"}', headers=headers).status_code == 415


def test_signed_delivery_with_another_content_type_is_415(client: TestClient) -> None:
    """Signed routes check the media type too (after authentication)."""
    body = json_body({"topic": "people.eu.joined", "data": {"name": "A"}, "id": "e-1"})
    headers = {**signed(body, path="/v1/events"), "Content-Type": "text/plain"}

    assert client.post("/v1/events", content=body, headers=headers).status_code == 415


def test_empty_signed_body_may_omit_content_type(client: TestClient) -> None:
    """Cancel, retry and scheduler calls without a body need no Content-Type."""
    path = "/v1/schedules/nightly-greeting"
    headers = signed(b"", path=path)
    del headers["Content-Type"]

    assert client.post(path, headers=headers).status_code == 202


BAD_JSON = [
    ("repeated-key", b'{"name": "Ada", "name": "Eve"}', "repeats the key 'name'"),
    ("nested-repeated-key", b'{"name": "Ada", "x": {"a": 1, "a": 2}}', "repeats the key 'a'"),
    ("nan", b'{"name": "Ada", "times": NaN}', "NaN"),
    ("infinity", b'{"name": "Ada", "times": Infinity}', "Infinity"),
    ("minus-infinity", b'{"name": "Ada", "times": -Infinity}', "Infinity"),
    ("float-overflow", b'{"name": "Ada", "times": 1e999}', "too large"),
    ("huge-int", b'{"name": "Ada", "times": 1' + b"0" * 400 + b"}", "64-bit"),
    ("int-over-64-bits", b'{"name": "Ada", "times": 18446744073709551616}', "64-bit"),
    ("deep-nesting", b'{"name": "Ada", "x": ' + b"[" * 65 + b"]" * 65 + b"}", "deeper than 64"),
    ("very-deep-nesting", b"[" * 100_000 + b"]" * 100_000, "deeper than 64"),
    ("not-utf8", b'{"name": "\xff"}', "UTF-8"),
    ("trailing-garbage", b'{"name": "Ada"} x', "not valid JSON"),
    ("lone-surrogate", b'{"name": "Ada\\ud800"}', "lone UTF-16 surrogate"),
    ("lone-surrogate-key", b'{"name": "Ada", "\\udfff": 1}', "lone UTF-16 surrogate"),
]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(body, reason) for _, body, reason in BAD_JSON],
    ids=[name for name, _, _ in BAD_JSON],
)
def test_json_relay_cannot_store_faithfully_is_400_naming_the_problem(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    body: bytes,
    reason: str,
) -> None:
    """Repeated keys, NaN/Infinity, overflowing numbers and deep nesting: 400, nothing written."""
    response = client.post(START, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_json"
    assert reason in response.json()["message"]
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_nesting_up_to_the_limit_and_64_bit_integers_are_accepted(client: TestClient) -> None:
    """The limits refuse only what is beyond them."""
    nested = b"[" * 63 + b"]" * 63
    body = b'{"name": "Ada", "times": 2, "x": ' + nested + b', "n": -9223372036854775808}'

    response = client.post(START, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 202


def test_malformed_signed_message_is_400_not_500(
    client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """A signed delivery of deeply nested junk is a 400 (the audit's RecursionError)."""
    body = b"[" * 50_000
    response = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert response.status_code == 400
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"name": "Ada", "name": "Eve"}', "repeats the key"),
        (b"[" * 5000 + b"]" * 5000, "deeper than 64"),
        (b'{"name": NaN}', "NaN"),
        (b'{"name": "\\udc00"}', "lone UTF-16 surrogate"),
    ],
    ids=["repeated-key", "deep", "nan", "lone-surrogate"],
)
def test_pubsub_data_relay_cannot_store_is_dead_lettered(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    data: bytes,
    reason: str,
) -> None:
    """Pub/Sub message data is held to the same JSON rules: acknowledged as dead, no run."""
    envelope = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": {"relay_topic": "people.eu.joined"},
            "messageId": "m-1",
        },
        "subscription": "projects/p/subscriptions/relay-events",
    }
    body = json_body(envelope)

    response = client.post("/v1/events", content=body, headers=signed(body, path="/v1/events"))

    assert response.status_code == 200
    assert response.json()["status"] == "dead_lettered"
    assert reason in response.json()["reason"]
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize("value", ["²", "1" * 5000, "-1", "1e3", "0x10"])
def test_junk_content_length_is_400(client: TestClient, value: str) -> None:
    """A Content-Length that is not plain ASCII digits is a 400 naming the header."""
    headers = [(b"content-length", value.encode()), (b"content-type", b"application/json")]
    response = client.post(START, headers=headers)

    assert response.status_code == 400
    assert response.json()["header"] == "Content-Length"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/runs/"), ("POST", "/v1/sagas/greet/runs/"), ("GET", "/healthz/")],
)
def test_trailing_slash_is_a_plain_404_without_a_redirect(
    client: TestClient, method: str, path: str
) -> None:
    """No 307 to a Location built from the Host header: the path is just not found."""
    response = client.request(
        method,
        path,
        headers={"Host": "evil.example", "Content-Type": "application/json"},
        content=b"{}" if method == "POST" else None,
        follow_redirects=False,
    )

    assert response.status_code == 404
    assert "location" not in response.headers
    assert "evil.example" not in response.text


def test_not_found_echoes_a_shortened_escaped_path(client: TestClient) -> None:
    """A long path with control characters comes back cut short and escaped."""
    response = client.get("/v1/" + "x" * 5000 + "%0d%0aX-Injected:%201")

    assert response.status_code == 404
    assert len(response.json()["message"]) < 300
    assert "\r" not in response.json()["message"]
