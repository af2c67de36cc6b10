"""Signed routes over HTTP: junk credentials are 401/403, signatures are bound and single-use.

The junk values are the audit's (issue 10, findings 3 and 5): non-ASCII digits that pass
``str.isdigit``, non-ASCII and non-hex digests, repeated parts, over-long and multi-line
headers, and bearer tokens where a signature is expected. Each must be refused with 401 or
403 (never a 5xx) and write nothing.
"""

from __future__ import annotations

import logging
import time

import pytest

from core.domain.records import Message, RunId, RunSnapshot, StepName
from core.domain.status import Action
from core.signing import SIGNATURE_HEADER, sign
from functions.http.app import create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import SIGNING_KEY, STEP_CALLS, TestClient, json_body, signed

DIGEST = "0" * 64
NONCE = "abcdefghijklmnopqrstuv"
ARABIC_DIGITS = "\u0661\u0667" + "\u0660" * 8  # digits to str.isdigit, not ASCII

JUNK_SIGNATURES: list[tuple[str, bytes]] = [
    ("superscript-digit", f"t=²,n={NONCE},v2={DIGEST}".encode()),
    ("arabic-digits", f"t={ARABIC_DIGITS},n={NONCE},v2={DIGEST}".encode()),
    ("non-ascii-digest", f"t={int(time.time())},n={NONCE},v2={'é' * 64}".encode()),
    ("non-hex-digest", f"t={int(time.time())},n={NONCE},v2={'z' * 64}".encode()),
    ("short-digest", f"t={int(time.time())},n={NONCE},v2=abc".encode()),
    ("repeated-part", f"t=1,t=2,n={NONCE},v2={DIGEST}".encode()),
    ("v1-scheme", f"t={int(time.time())},v1={DIGEST}".encode()),
    ("v1-and-v2", f"t={int(time.time())},n={NONCE},v1={DIGEST},v2={DIGEST}".encode()),
    ("over-long", b"t=1," + b"x" * 20_000),
    ("huge-time", f"t={'9' * 500},n={NONCE},v2={DIGEST}".encode()),
    ("negative-time", f"t=-5,n={NONCE},v2={DIGEST}".encode()),
    ("nul", f"t=1\x00,n={NONCE},v2={DIGEST}".encode()),
    ("multi-line", f"t=1\r\n,n={NONCE},v2={DIGEST}".encode()),
    ("latin-1-bytes", b"t=\xff\xfe,n=\x80,v2=\x00"),
    ("only-commas", b",,,,"),
    ("equals-only", b"="),
    ("empty-parts", b"t=,n=,v2="),
    ("bearer-token", b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"),
]

SIGNED_ROUTES = [
    "/v1/steps",
    "/v1/events",
    "/v1/schedules/nightly-greeting",
    "/v1/sweep",
    "/v1/runs/{run_id}/retry",
    "/v1/runs/{run_id}/cancel",
]


def snapshot(store: SQLiteStateStore, run_id: str) -> RunSnapshot | None:
    return store.load_run(run_id=RunId(run_id))


@pytest.fixture
def run_and_step(client: TestClient) -> tuple[str, bytes]:
    """A started run of ``greet`` (its first message queued) and that message's body."""
    run_id = client.post("/v1/sagas/greet/runs", json={"name": "Ada"}).json()["run_id"]
    message = Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1)
    return run_id, json_body(message.to_json())


def assert_unchanged(
    store: SQLiteStateStore, queue: SQLiteTaskQueue, run_id: str, before: RunSnapshot | None
) -> None:
    assert snapshot(store, run_id) == before
    assert len(store.list_runs()) == 1
    assert queue.pending_count() == 1
    assert STEP_CALLS == {}


@pytest.mark.parametrize("route", SIGNED_ROUTES)
@pytest.mark.parametrize(
    "value", [value for _, value in JUNK_SIGNATURES], ids=[name for name, _ in JUNK_SIGNATURES]
)
def test_junk_signature_is_refused_with_401_or_403_and_writes_nothing(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    run_and_step: tuple[str, bytes],
    route: str,
    value: bytes,
) -> None:
    """Every junk X-Relay-Signature on every signed route: 401/403 JSON, no 5xx, no write."""
    run_id, body = run_and_step
    before = snapshot(sqlite_store, run_id)
    headers = [(SIGNATURE_HEADER.encode(), value), (b"content-type", b"application/json")]

    response = client.post(route.format(run_id=run_id), content=body, headers=headers)

    assert response.status_code in (401, 403), response.text
    assert response.json()["error"] in ("unauthenticated", "forbidden")
    assert_unchanged(sqlite_store, sqlite_queue, run_id, before)


JUNK_AUTHORIZATION = [
    b"Bearer " + b"a" * 10_000,
    b"Bearer \xff\xfe",
    b"Basic dXNlcjpwYXNz",
    b"Bearer eyJhbGciOiJub25lIn0.eyJleHAiOjEwMDAwMDAwMDAwMDB9.",
]


@pytest.mark.parametrize("authorization", JUNK_AUTHORIZATION, ids=range(len(JUNK_AUTHORIZATION)))
def test_authorization_header_is_no_substitute_for_a_signature(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    run_and_step: tuple[str, bytes],
    authorization: bytes,
) -> None:
    """Locally only X-Relay-Signature counts: any Authorization alone is 401, nothing written."""
    run_id, body = run_and_step
    before = snapshot(sqlite_store, run_id)
    headers = [(b"authorization", authorization), (b"content-type", b"application/json")]

    response = client.post("/v1/steps", content=body, headers=headers)

    assert response.status_code == 401
    assert_unchanged(sqlite_store, sqlite_queue, run_id, before)


def test_repeated_signature_headers_are_refused(
    client: TestClient, run_and_step: tuple[str, bytes]
) -> None:
    """Two X-Relay-Signature headers (even both valid) are 403: which one counts is a guess."""
    _, body = run_and_step
    headers = [
        (SIGNATURE_HEADER, signed(body, path="/v1/steps")[SIGNATURE_HEADER]),
        (SIGNATURE_HEADER, signed(body, path="/v1/steps")[SIGNATURE_HEADER]),
        ("content-type", "application/json"),
    ]

    response = client.post("/v1/steps", content=body, headers=headers)

    assert response.status_code == 403
    assert "repeated" in response.json()["message"]


# -- signatures bound to their request (the audit's cross-route replays) ------------------


@pytest.mark.parametrize(
    ("signed_for", "sent_to"),
    [
        ("/v1/runs/{run_id}/cancel", "/v1/runs/{run_id}/retry"),
        ("/v1/runs/{run_id}/cancel", "/v1/sweep"),
        ("/v1/runs/{run_id}/cancel", "/v1/schedules/nightly-greeting"),
        ("/v1/sweep", "/v1/runs/{run_id}/cancel"),
        ("/v1/runs/r-other/cancel", "/v1/runs/{run_id}/cancel"),
        ("/v1/schedules/nightly-greeting", "/v1/schedules/nightly-greeting?x=1"),
    ],
)
def test_signature_for_one_route_is_refused_on_another(
    client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    run_and_step: tuple[str, bytes],
    signed_for: str,
    sent_to: str,
) -> None:
    """A signature over an empty body is good for its own method and path only."""
    run_id, _ = run_and_step
    before = snapshot(sqlite_store, run_id)
    headers = signed(b"", path=signed_for.format(run_id=run_id))

    response = client.post(sent_to.format(run_id=run_id), headers=headers)

    assert response.status_code == 403
    assert "does not match" in response.json()["message"]
    assert_unchanged(sqlite_store, sqlite_queue, run_id, before)


def test_replayed_cancel_is_refused(
    client: TestClient, sqlite_store: SQLiteStateStore, run_and_step: tuple[str, bytes]
) -> None:
    """The same signed cancel sent twice: the first acts, the second is a 403 replay."""
    run_id, _ = run_and_step
    path = f"/v1/runs/{run_id}/cancel"
    headers = signed(b"", path=path)

    first = client.post(path, headers=headers)
    after_first = snapshot(sqlite_store, run_id)
    again = client.post(path, headers=headers)

    assert first.status_code == 200
    assert again.status_code == 403
    assert "already used" in again.json()["message"]
    assert snapshot(sqlite_store, run_id) == after_first


def test_replayed_step_delivery_is_refused_but_a_fresh_signature_passes(
    client: TestClient, run_and_step: tuple[str, bytes]
) -> None:
    """Redelivery signs afresh (accepted, acknowledged); the captured signature is refused."""
    _, body = run_and_step
    headers = signed(body, path="/v1/steps")

    first = client.post("/v1/steps", content=body, headers=headers)
    replayed = client.post("/v1/steps", content=body, headers=headers)
    redelivered = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert (first.status_code, replayed.status_code, redelivered.status_code) == (200, 403, 200)
    assert STEP_CALLS == {"write_text": 1}


def test_query_string_is_part_of_the_signed_path(client: TestClient) -> None:
    """A request signed with its query string passes (the schedule ignores the query)."""
    path = "/v1/schedules/nightly-greeting?source=test"
    body = json_body({"scheduled_time": "2026-01-01T03:00:00Z"})

    response = client.post(path, content=body, headers=signed(body, path=path))

    assert response.status_code == 202


def test_signature_from_a_minute_ago_is_stale(
    client: TestClient, run_and_step: tuple[str, bytes]
) -> None:
    """61 s old is outside the window (the old scheme allowed 300 s)."""
    _, body = run_and_step
    headers = signed(body, path="/v1/steps", now=time.time() - 61)

    response = client.post("/v1/steps", content=body, headers=headers)

    assert response.status_code == 403
    assert "too old" in response.json()["message"]


def test_v1_signature_is_refused_naming_the_scheme(
    client: TestClient, run_and_step: tuple[str, bytes]
) -> None:
    """A correctly computed v1 signature (timestamp and body only) is refused by name."""
    import hashlib
    import hmac

    _, body = run_and_step
    timestamp = int(time.time())
    digest = hmac.new(SIGNING_KEY, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {SIGNATURE_HEADER: f"t={timestamp},v1={digest}", "Content-Type": "application/json"}

    response = client.post("/v1/steps", content=body, headers=headers)

    assert response.status_code == 403
    assert "v1 is no longer accepted" in response.json()["message"]


def test_signature_by_method_is_upper_cased(client: TestClient) -> None:
    """Signers may pass the method in any case; the MAC covers it upper-cased."""
    path = "/v1/schedules/nightly-greeting"
    header = sign(method="post", path=path, body=b"", key=SIGNING_KEY)

    assert client.post(path, headers={SIGNATURE_HEADER: header}).status_code == 202


# -- what is logged ---------------------------------------------------------------------


class _BrokenEngine:
    """An engine whose ``handle`` fails with a bug, so the request is logged."""

    def handle(self, message: Message) -> None:
        raise KeyError("bug")


def test_failures_are_logged_with_the_principal(caplog: pytest.LogCaptureFixture) -> None:
    """A failed authenticated request's log line names who signed it."""
    broken = _BrokenEngine()
    app = create_app(
        engine=lambda: broken,  # type: ignore[arg-type, return-value]
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=OpenAuthenticator("local"),
    )
    body = json_body(Message(RunId("r-9"), StepName("write_text"), Action.EXECUTE, 1).to_json())

    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="relay.http"):
        response = client.post("/v1/steps", content=body, headers=signed(body, path="/v1/steps"))

    assert response.status_code == 500
    assert [getattr(r, "principal", None) for r in caplog.records if r.levelname == "ERROR"] == [
        "hmac:local"
    ]


def test_refusals_are_logged_without_the_credential(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged signature is logged as refused with the reason, never the header's value."""
    forged = f"t={int(time.time())},n={NONCE},v2={'a' * 64}"
    headers = {SIGNATURE_HEADER: forged, "Content-Type": "application/json"}

    with caplog.at_level(logging.INFO, logger="relay.http"):
        response = client.post("/v1/sweep", headers=headers)

    assert response.status_code == 403
    [record] = [r for r in caplog.records if r.getMessage().startswith("request refused")]
    assert record.levelname == "WARNING"
    assert getattr(record, "path", None) == "/v1/sweep"
    assert "a" * 64 not in record.getMessage()
