"""Forged and replayed signatures on every signed route of ``relay dev`` (issue 10, item 9).

Each signed route (``/v1/steps``, ``/v1/events``, ``/v1/schedules/{name}``, ``/v1/sweep``,
retry, cancel) gets each forgery: no header, malformed and non-ASCII headers, another key,
stale and future timestamps, a signature of another body, route or method, and the old
scheme v1. Each must be a 401/403 that writes nothing; one accepted counts in the summary
as a forged delivery accepted. A valid signature sent twice must be refused the second
time (replay). The key-space tests check that a client's idempotency key cannot occupy
the run of a schedule or an event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.fuzz.stack import (
    TALLY,
    TERMINAL,
    FuzzStack,
    check_outcome,
    json_of,
    post_once,
    signature,
)

HEADER = b"X-Relay-Signature"
NEXT_NEW_YEAR = "2027-01-01T03:00:00Z"
"""A time of the fuzz-nightly schedule (``0 3 1 1 *``)."""


@pytest.fixture(scope="module")
def client(fuzz_stack: FuzzStack) -> Iterator[httpx.Client]:
    with fuzz_stack.client() as http:
        yield http


@pytest.fixture(scope="module")
def done_run(fuzz_stack: FuzzStack, client: httpx.Client) -> str:
    """A COMPLETED run of fuzz-free (retry and cancel of it are 409 once authenticated)."""
    run_id = str(client.post("/v1/sagas/fuzz-free/runs", json={"n": 1}).json()["run_id"])
    deadline = time.monotonic() + 30
    while client.get(f"/v1/runs/{run_id}").json()["status"] not in TERMINAL:
        assert time.monotonic() < deadline, "the fixture run did not finish"
        time.sleep(0.05)
    return run_id


def route(name: str, run_id: str) -> tuple[str, bytes]:
    """The path and a plausible body of the signed route ``name``."""
    if name == "steps":
        message = {"format": 2, "saga": "fuzz-free", "run_id": run_id, "step": "echo"}
        return "/v1/steps", json.dumps({**message, "action": "execute", "attempt": 1}).encode()
    if name == "events":
        event = {"topic": "fuzz.forged", "data": {"paid": True}, "id": f"forged-{uuid.uuid4()}"}
        return "/v1/events", json.dumps(event).encode()
    if name == "schedules":
        return "/v1/schedules/fuzz-nightly", json.dumps({"scheduled_time": NEXT_NEW_YEAR}).encode()
    if name == "sweep":
        return "/v1/sweep", b""
    return f"/v1/runs/{run_id}/{name}", b""


ROUTES = ["steps", "events", "schedules", "sweep", "retry", "cancel"]

Forgery = Callable[[FuzzStack, str, bytes], list[bytes]]
"""Builds the X-Relay-Signature values of one forgery for (stack, path, body)."""


def _sign(stack: FuzzStack, path: str, body: bytes, **changes: Any) -> bytes:
    args: dict[str, Any] = {"method": "POST", "path": path, "body": body, "key": stack.key}
    args["now"] = time.time()
    args.update(changes)
    return signature(**args).encode()


def _v1(stack: FuzzStack, path: str, body: bytes) -> list[bytes]:
    """The old scheme: timestamp and body only (refused once v2 lands: "v1 is refused")."""
    t = str(int(time.time()))
    digest = hmac.new(stack.key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return [f"t={t},v1={digest}".encode()]


def _now() -> bytes:
    return str(int(time.time())).encode()


FORGERIES: dict[str, tuple[Forgery, str | None]] = {
    # name: (forgery, None or the reason of a strict xfail naming the branch that fixes it)
    "missing": (lambda s, p, b: [], None),
    "empty": (lambda s, p, b: [b""], None),
    "garbage": (lambda s, p, b: [b"garbage"], None),
    "no-digest": (lambda s, p, b: [b"t=" + _now()], None),
    "non-numeric-t": (lambda s, p, b: [b"t=abc,n=x,v1=00,v2=00"], None),
    "superscript-t": (lambda s, p, b: [b"t=\xb2,n=x,v1=00,v2=00"], None),
    "non-ascii-digest": (
        lambda s, p, b: [b"t=" + _now() + b",n=x,v1=" + b"\xe9" * 64 + b",v2=" + b"\xe9" * 64],
        None,
    ),
    "huge": (lambda s, p, b: [b"t=" + _now() + b",v1=" + b"a" * 8000], None),
    "wrong-key": (lambda s, p, b: [_sign(s, p, b, key=b"not-the-key")], None),
    "stale-1h": (lambda s, p, b: [_sign(s, p, b, now=time.time() - 3600)], None),
    "future-30s": (lambda s, p, b: [_sign(s, p, b, now=time.time() + 30)], None),
    "other-body": (lambda s, p, b: [_sign(s, p, b'{"other": 1}')], None),
    "other-route": (
        lambda s, p, b: [_sign(s, "/v1/steps" if p != "/v1/steps" else "/v1/sweep", b)],
        None,
    ),
    "other-method": (lambda s, p, b: [_sign(s, p, b, method="GET")], None),
    "scheme-v1": (_v1, None),
}


def _cases() -> list[Any]:
    cases = []
    for name, (_, reason) in FORGERIES.items():
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        cases += [pytest.param(r, name, id=f"{r}-{name}", marks=marks) for r in ROUTES]
    return cases


def _count_forgery(status: int, what: str) -> None:
    if status not in (401, 403):
        TALLY.add(forged_or_replayed_accepted=1)
        TALLY.note(f"{what} accepted: {status}")


@pytest.mark.slow
@pytest.mark.parametrize(("route_name", "forgery"), _cases())
def test_forged_signature_is_refused_without_writes(
    quiet: FuzzStack, client: httpx.Client, done_run: str, route_name: str, forgery: str
) -> None:
    """A forged, stale or misbound signature is a 401/403, and nothing changes."""
    path, body = route(route_name, done_run)
    values = FORGERIES[forgery][0](quiet, path, body)
    headers = [(b"Content-Type", b"application/json")] + [(HEADER, v) for v in values]

    status, _ = check_outcome(quiet, post_once(client, path, body, headers))
    _count_forgery(status, f"{forgery} signature on {path}")
    assert status in (401, 403)


@pytest.mark.slow
@pytest.mark.parametrize("route_name", ROUTES)
def test_replayed_signature_is_refused_without_writes(
    quiet: FuzzStack, client: httpx.Client, done_run: str, route_name: str
) -> None:
    """A valid signature is accepted once; the same request again is a 401/403, no writes."""
    path, body = route(route_name, done_run)
    headers = {
        "Content-Type": "application/json",
        "X-Relay-Signature": quiet.sign("POST", path, body),
    }
    first = client.post(path, content=body, headers=headers)
    assert first.status_code not in (401, 403), first.text

    status, _ = check_outcome(quiet, post_once(client, path, body, headers))
    _count_forgery(status, f"replay on {path}")
    assert status in (401, 403)


@pytest.mark.slow
@pytest.mark.parametrize("route_name", ROUTES)
def test_valid_signature_is_accepted(
    quiet: FuzzStack, client: httpx.Client, done_run: str, route_name: str
) -> None:
    """The control: the same request, signed as the dispatcher signs, is authenticated."""
    path, body = route(route_name, done_run)
    headers = {
        "Content-Type": "application/json",
        "X-Relay-Signature": quiet.sign("POST", path, body),
    }
    response = client.post(path, content=body, headers=headers)
    assert response.status_code in (200, 202, 409), response.text


@pytest.mark.slow
def test_client_key_cannot_occupy_the_run_of_a_schedule(
    quiet: FuzzStack, client: httpx.Client
) -> None:
    """A start keyed like a scheduled time leaves that time's run to the scheduler."""
    key = f"schedule:fuzz-nightly:{NEXT_NEW_YEAR}"
    squat = client.post(
        "/v1/sagas/fuzz-nightly/runs", json={"forged": True}, headers={"Idempotency-Key": key}
    )
    assert squat.status_code in (202, 400)
    path = "/v1/schedules/fuzz-nightly"
    body = json.dumps({"scheduled_time": NEXT_NEW_YEAR}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Relay-Signature": quiet.sign("POST", path, body),
    }
    fired = client.post(path, content=body, headers=headers)
    assert fired.status_code == 202, fired.text
    assert fired.json()["run_id"] != squat.json().get("run_id")
    assert client.get(f"/v1/runs/{fired.json()['run_id']}").json()["input"] == {}


@pytest.mark.slow
def test_client_key_cannot_occupy_the_run_of_an_event(
    quiet: FuzzStack, client: httpx.Client
) -> None:
    """A start keyed like an event id leaves that event's run to the event."""
    event_id = f"paid-{uuid.uuid4()}"
    squat = client.post(
        "/v1/sagas/fuzz-free/runs",
        json={"forged": True},
        headers={"Idempotency-Key": f"event:{event_id}"},
    )
    assert squat.status_code in (202, 400)
    path = "/v1/events"
    body = json.dumps({"topic": "fuzz.paid", "data": {"real": True}, "id": event_id}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Relay-Signature": quiet.sign("POST", path, body),
    }
    published = client.post(path, content=body, headers=headers)
    assert published.status_code == 202, published.text
    (run_id,) = published.json()["runs"]
    assert run_id != squat.json().get("run_id")
    assert client.get(f"/v1/runs/{run_id}").json()["input"] != {"forged": True}


def _pubsub(data: bytes, **message: Any) -> bytes:
    envelope = {"message": {"data": base64.b64encode(data).decode(), **message}}
    return json.dumps({**envelope, "subscription": "projects/p/subscriptions/s"}).encode()


DEEP = 100_000
JUNK: list[tuple[str, bytes]] = [
    ("nested-arrays-100k", b"[" * DEEP + b"]" * DEEP),
    ("nested-objects-20k", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
    ("array", b"[]"),
    ("null", b"null"),
    ("string", b'"text"'),
    ("NaN", b'{"x": NaN}'),
    ("invalid-utf8", b'{"a": "\xff"}'),
    ("escaped-NUL", b'{"a": "\\u0000", "\\u0000": 1}'),
    ("100KB-key", b'{"' + b"k" * 100_000 + b'": 1}'),
    ("bad-fields", b'{"format": true, "run_id": [], "step": {}, "attempt": -1}'),
    (
        "attempt-1e400",
        b'{"format": 2, "saga": null, "run_id": "x", "step": "y", "action": "execute",'
        b' "attempt": 1e400}',
    ),
    ("sweep-inf", b'{"stale_after_seconds": 1e999}'),
    ("sweep-negative", b'{"stale_after_seconds": -1}'),
    ("bad-time", b'{"scheduled_time": "9999-99-99"}'),
    ("time-overflow", b'{"scheduled_time": "+275760-09-13T00:00:00Z"}'),
    ("time-not-a-string", b'{"scheduled_time": 1e999}'),
    ("bad-topic", b'{"topic": "a..b", "id": "x"}'),
    ("long-topic", b'{"topic": "fuzz.' + b"a" * 10_000 + b'", "id": "x", "data": 1}'),
    ("pubsub-nested", _pubsub(b"[" * DEEP + b"]" * DEEP, messageId="m1")),
    ("pubsub-NaN", _pubsub(b"NaN", messageId="m2")),
    ("pubsub-bad-types", _pubsub(b"{}", messageId=7, attributes={"topic": 1})),
    ("pubsub-not-base64", b'{"message": {"data": "%%%not-base64"}}'),
    ("surrogate-data", b'{"topic": "fuzz.s", "id": "s1", "data": "\\ud800"}'),
    (
        "pubsub-surrogate",
        _pubsub(b'{"a": "\\ud800"}', messageId="m3", attributes={"topic": "fuzz.s"}),
    ),
]


KNOWN_JUNK_FAILURES: dict[tuple[str, str], str] = {}
"""(route, junk) pairs that fail for a known reason: a strict xfail naming who fixes it."""


def _junk_cases() -> list[Any]:
    cases = []
    for route_name in ("steps", "events", "schedules", "sweep"):
        for name, body in JUNK:
            reason = KNOWN_JUNK_FAILURES.get((route_name, name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(route_name, body, id=f"{route_name}-{name}", marks=marks))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize(("route_name", "body"), _junk_cases())
def test_signed_junk_is_refused_without_writes(
    quiet: FuzzStack, client: httpx.Client, done_run: str, route_name: str, body: bytes
) -> None:
    """Behind a valid signature, junk is a 4xx, a dead letter, or harmless.

    Harmless: the schedule ignores unknown fields and fires its latest time, an event with
    a long but valid topic is published, a sweep runs; ``check_outcome`` then allows only
    the writes of the runs the answer reports.
    """
    path, _ = route(route_name, done_run)
    signed = quiet.sign("POST", path, body)
    headers = {"Content-Type": "application/json", "X-Relay-Signature": signed}

    status, answer = check_outcome(quiet, post_once(client, path, body, headers))
    dead_letter = status == 200 and json_of(answer).get("status") == "dead_lettered"
    harmless = (route_name, status) in {("sweep", 200), ("schedules", 202), ("events", 202)}
    assert 400 <= status < 500 or dead_letter or harmless


SCHEDULE_TIMES = [
    pytest.param(b"", "0001-01-01T00:00:00.0+01:01", id="header-before-year-1"),
    pytest.param(b'{"scheduled_time": "0001-01-01T00:00:00+01:00"}', None, id="body-before-year-1"),
    pytest.param(b'{"scheduled_time": "9999-12-31T23:59:59-01:00"}', None, id="body-after-9999"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "header"), SCHEDULE_TIMES)
def test_scheduled_time_out_of_range_is_refused(
    quiet: FuzzStack, client: httpx.Client, body: bytes, header: str | None
) -> None:
    """A scheduled time that leaves datetime's range in UTC is a 400, not a 500.

    Found by schemathesis through ``X-CloudScheduler-ScheduleTime``: year 1 with a positive
    offset, or 9999-12-31 with a negative one, raised OverflowError in the parsing.
    """
    path = "/v1/schedules/fuzz-nightly"
    headers = {
        "Content-Type": "application/json",
        "X-Relay-Signature": quiet.sign("POST", path, body),
    }
    if header is not None:
        headers["X-CloudScheduler-ScheduleTime"] = header

    status, _ = check_outcome(quiet, post_once(client, path, body, headers))
    assert status == 400
