"""Who may call the run API: API keys, grants per saga, platform identities, configuration.

Driven through the real app (``create_app``) over the SQLite engine, with keys in a real
key store, so a refusal is checked to write nothing.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.domain.records import RunId, RunRecord, StepName, StepRecord
from core.domain.status import RunStatus
from core.engine.engine import Engine
from core.errors import ConfigurationError
from core.ports.api_keys import issue_key
from functions.http.api_auth import auth_modes, authenticator_for
from functions.http.app import ALL_ROUTES, create_app
from functions.http.auth import Forbidden, HmacVerifier, Unauthenticated
from functions.http.callers import (
    ApiKeyCheck,
    CallerRequest,
    CredentialChain,
    Grants,
    PlatformAuthenticator,
)
from functions.settings import Settings
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from infra.memory.api_keys import MemoryApiKeyStore
from tests.support.entry_points import SIGNING_KEY, TestClient, assert_nothing_written

T0 = time.time()


@pytest.fixture
def keys() -> MemoryApiKeyStore:
    return MemoryApiKeyStore()


@pytest.fixture
def keyed_client(engine: Engine, keys: MemoryApiKeyStore) -> Iterator[TestClient]:
    """The whole app; run API callers must present an API key from ``keys``."""
    app = create_app(
        engine=lambda: engine,
        verifier=HmacVerifier(SIGNING_KEY),
        authenticator=CredentialChain([ApiKeyCheck(lambda: keys)]),
        include=ALL_ROUTES,
    )
    with TestClient(app) as client:
        yield client


def new_key(keys: MemoryApiKeyStore, grants: str) -> dict[str, str]:
    issued = issue_key(grants=grants, description="test", now=T0)
    keys.create_key(record=issued.record)
    return {"Authorization": f"Bearer {issued.text}"}


def put_run(store: SQLiteStateStore, run_id: str, saga: str, created_at: float) -> None:
    run = RunRecord(
        run_id=RunId(run_id),
        saga=saga,
        status=RunStatus.PENDING,
        input={"secret": run_id},
        definition_hash="sha256:x",
        created_at=created_at,
        updated_at=created_at,
    )
    store.create_run(run=run, steps=[StepRecord(RunId(run_id), StepName("s"))], outbox=())


# -- grants --------------------------------------------------------------------------


def test_grants_parse_per_saga_with_wildcards() -> None:
    """``saga:start,read;other:read;*:read``: per saga, * for every saga or both actions."""
    grants = Grants.parse(" order : start , read ; stock:read ;*:read")
    both = Grants.parse("order:*")

    assert grants.may("start", "order") and grants.may("read", "anything")
    assert not grants.may("start", "stock")
    assert grants.readable_sagas() is None
    assert Grants.parse("a:read;b:start").readable_sagas() == frozenset({"a"})
    assert both.may("start", "order") and both.may("read", "order")
    assert Grants.parse("").rules == () and not Grants().may("read", "x")
    assert Grants.parse("b:read;a:start,read").text() == "a:read,start;b:read"


@pytest.mark.parametrize("text", ["order", "order:", "order:delete", ":read", "a b:read", "é:read"])
def test_malformed_grants_are_refused_naming_the_entry(text: str) -> None:
    """Anything but saga:actions is a ValueError that says what is wrong."""
    with pytest.raises(ValueError, match="grants"):
        Grants.parse(text)


# -- API keys over HTTP ----------------------------------------------------------------


def test_a_start_without_credentials_is_401_and_writes_nothing(
    keyed_client: TestClient, sqlite_store: SQLiteStateStore, sqlite_queue: SQLiteTaskQueue
) -> None:
    """No credential: 401 with a challenge naming both ways to present a key."""
    response = keyed_client.post("/v1/sagas/greet/runs", json={"name": "Ada"})

    assert response.status_code == 401
    assert "X-Api-Key" in response.headers["www-authenticate"]
    assert keyed_client.get("/v1/runs").status_code == 401
    assert keyed_client.get("/v1/runs/r-1").status_code == 401
    assert_nothing_written(sqlite_store, sqlite_queue)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Api-Key": "rk_short"},
        {"X-Api-Key": "rk_aaaaaaaaaaaa_" + "x" * 43},  # unknown key id
        {"Authorization": "Bearer rk_aaaaaaaaaaaa_" + "é" * 43},
        {"Authorization": "Bearer " + "x" * 9000},
        {"Authorization": "Bearer a b"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-Api-Key": "rk_\x00"},
    ],
    ids=["malformed", "unknown", "non-ascii", "huge", "spaces", "basic", "nul"],
)
def test_bad_credentials_are_403_and_never_echoed(
    keyed_client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    headers: dict[str, str],
) -> None:
    """Malformed, unknown or foreign credentials: 403 (never 5xx), the secret not echoed."""
    encoded = {k: v.encode("utf-8") for k, v in headers.items()}  # raw bytes on the wire
    response = keyed_client.post("/v1/sagas/greet/runs", json={"name": "Ada"}, headers=encoded)

    assert response.status_code == 403, response.text
    secret = next(iter(headers.values()))
    assert secret[-20:] not in response.text
    assert_nothing_written(sqlite_store, sqlite_queue)


def test_a_wrong_secret_or_a_revoked_key_is_403(
    keyed_client: TestClient, keys: MemoryApiKeyStore
) -> None:
    """The right id with another secret is refused; so is a key once revoked."""
    good = new_key(keys, "greet:start,read")
    key_text = good["Authorization"].removeprefix("Bearer ")
    wrong = key_text[:-1] + ("A" if key_text[-1] != "A" else "B")
    key_id = key_text.split("_")[1]

    assert keyed_client.get("/v1/runs", headers=good).status_code == 200
    assert keyed_client.get("/v1/runs", headers={"X-Api-Key": wrong}).status_code == 403
    keys.revoke_key(key_id=key_id, now=T0)
    revoked = keyed_client.get("/v1/runs", headers=good)
    assert revoked.status_code == 403 and "revoked" in revoked.json()["message"]


def test_starting_needs_the_start_grant_of_that_saga(
    keyed_client: TestClient,
    keys: MemoryApiKeyStore,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
) -> None:
    """A key that may only read greet, or start another saga, gets 403 and writes nothing."""
    for grants in ("greet:read", "other:start,read"):
        response = keyed_client.post(
            "/v1/sagas/greet/runs", json={"name": "Ada"}, headers=new_key(keys, grants)
        )
        assert response.status_code == 403 and response.json()["saga"] == "greet"
    assert_nothing_written(sqlite_store, sqlite_queue)
    started = keyed_client.post(
        "/v1/sagas/greet/runs", json={"name": "Ada"}, headers=new_key(keys, "greet:start")
    )
    assert started.status_code == 202


def test_a_run_the_caller_may_not_read_is_404_like_a_missing_one(
    keyed_client: TestClient, keys: MemoryApiKeyStore, sqlite_store: SQLiteStateStore
) -> None:
    """Reading a run of another saga answers exactly what an unknown run id answers."""
    put_run(sqlite_store, "r-secret", "payments", T0)
    reader = new_key(keys, "greet:read")

    hidden = keyed_client.get("/v1/runs/r-secret", headers=reader)
    missing = keyed_client.get("/v1/runs/r-none", headers=reader)
    allowed = keyed_client.get("/v1/runs/r-secret", headers=new_key(keys, "payments:read"))

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"] == missing.json()["error"] == "run_not_found"
    assert "secret" not in hidden.text.replace("r-secret", "")
    assert allowed.status_code == 200 and allowed.json()["input"] == {"secret": "r-secret"}


def test_the_list_shows_only_readable_sagas_newest_first(
    keyed_client: TestClient, keys: MemoryApiKeyStore, sqlite_store: SQLiteStateStore
) -> None:
    """Entries of unreadable sagas are left out; the merge keeps newest-first and the limit."""
    put_run(sqlite_store, "r-a1", "alpha", T0 + 1)
    put_run(sqlite_store, "r-b1", "beta", T0 + 2)
    put_run(sqlite_store, "r-c1", "gamma", T0 + 3)
    put_run(sqlite_store, "r-a2", "alpha", T0 + 4)
    reader = new_key(keys, "alpha:read;beta:read;gamma:start")

    listed = keyed_client.get("/v1/runs", headers=reader).json()["runs"]
    limited = keyed_client.get("/v1/runs", params={"limit": "2"}, headers=reader).json()["runs"]
    starter = keyed_client.get("/v1/runs", headers=new_key(keys, "gamma:start")).json()["runs"]
    everything = keyed_client.get("/v1/runs", headers=new_key(keys, "*:read")).json()["runs"]

    assert [r["run_id"] for r in listed] == ["r-a2", "r-b1", "r-a1"]
    assert [r["run_id"] for r in limited] == ["r-a2", "r-b1"]
    assert starter == []
    assert [r["run_id"] for r in everything] == ["r-a2", "r-c1", "r-b1", "r-a1"]
    assert all("input" not in r and "output" not in r and "error" not in r for r in everything)


def test_listing_a_named_saga_the_caller_may_not_read_is_403(
    keyed_client: TestClient, keys: MemoryApiKeyStore
) -> None:
    """saga= naming an unreadable saga is refused outright (not an empty list)."""
    reader = new_key(keys, "alpha:read")

    refused = keyed_client.get("/v1/runs", params={"saga": "beta"}, headers=reader)
    allowed = keyed_client.get("/v1/runs", params={"saga": "alpha"}, headers=reader)

    assert refused.status_code == 403 and refused.json()["saga"] == "beta"
    assert allowed.status_code == 200


# -- platform identities ---------------------------------------------------------------


def google_token(claims: dict[str, object]) -> str:
    def b64(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256'})}.{b64(claims)}.c2ln"


def test_platform_callers_are_named_by_what_the_platform_verified() -> None:
    """GCP: the ID token's email (not re-verified); AWS: the authorizer's IAM ARN or JWT claims."""
    grants = Grants.parse("*:read")
    gcp = PlatformAuthenticator("gcp", grants)
    aws = PlatformAuthenticator("aws", grants)
    token = google_token({"email": "ci@p.iam.gserviceaccount.com"})

    def ask(headers: dict[str, str], scope: dict[str, object] | None = None) -> CallerRequest:
        return CallerRequest(headers=headers, source="1.2.3.4", scope=scope or {})

    iam = {
        "aws.event": {
            "requestContext": {"authorizer": {"iam": {"userArn": "arn:aws:iam::1:user/ci"}}}
        }
    }
    jwt = {"aws.event": {"requestContext": {"authorizer": {"jwt": {"claims": {"sub": "u-7"}}}}}}
    assert gcp.authenticate(ask({"Authorization": f"Bearer {token}"})).identity == (
        "gcp:ci@p.iam.gserviceaccount.com"
    )
    assert gcp.authenticate(ask({"Authorization": "Bearer junk.é.x"})).identity == "gcp:unknown"
    assert gcp.authenticate(ask({})).identity == "gcp:unknown"
    stripped = token.rsplit(".", 1)[0] + "."
    served = {"X-Serverless-Authorization": f"Bearer {stripped}"}
    assert gcp.authenticate(ask(served)).identity == "gcp:ci@p.iam.gserviceaccount.com"
    assert aws.authenticate(ask({}, iam)).identity == "aws:iam:arn:aws:iam::1:user/ci"
    assert aws.authenticate(ask({}, jwt)).identity == "aws:jwt:u-7"
    caller = aws.authenticate(ask({}, {"aws.event": {"requestContext": "odd"}}))
    assert (caller.identity, caller.kind, caller.grants) == ("aws:unknown", "platform", grants)


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RELAY_BACKEND": "gcp"}, ("platform",)),
        ({"RELAY_BACKEND": "aws"}, ("platform",)),
        ({"RELAY_BACKEND": "local"}, ("api_key",)),
        ({"RELAY_BACKEND": "local", "RELAY_API_AUTH": "jwt, API_KEY"}, ("jwt", "api_key")),
    ],
)
def test_auth_modes_default_by_backend(env: dict[str, str], expected: tuple[str, ...]) -> None:
    """Clouds default to the platform's authentication, local to API keys."""
    assert auth_modes(Settings.from_env(env)) == expected


def test_loopback_dev_is_open_unless_auth_is_set() -> None:
    """relay dev on loopback serves open; an explicit RELAY_API_AUTH wins."""
    assert auth_modes(Settings.from_env({}), is_loopback_dev=True) == ("local",)
    explicit = Settings.from_env({"RELAY_API_AUTH": "api_key"})
    assert auth_modes(explicit, is_loopback_dev=True) == ("api_key",)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RELAY_API_AUTH": "magic"}, "unknown mode"),
        ({"RELAY_API_AUTH": "platform,api_key"}, "stand alone"),
        ({"RELAY_API_AUTH": "platform"}, "RELAY_BACKEND"),
        ({"RELAY_BACKEND": "gcp", "RELAY_PLATFORM_GRANTS": "x:y"}, "RELAY_PLATFORM_GRANTS"),
    ],
)
def test_bad_auth_configuration_names_the_variable(env: dict[str, str], match: str) -> None:
    """A wrong mode or grant text stops the first request with a configuration error."""
    with pytest.raises(ConfigurationError, match=match):
        authenticator_for(Settings.from_env(env), api_keys=MemoryApiKeyStore)


def test_public_mode_is_anonymous_with_every_grant_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RELAY_API_AUTH=public: the explicit opt-out, logged as a warning at startup."""
    authenticator = authenticator_for(Settings.from_env({"RELAY_API_AUTH": "public"}))

    caller = authenticator.authenticate(CallerRequest(headers={}, source="9.9.9.9", scope={}))

    assert (caller.identity, caller.kind) == ("anonymous", "anonymous")
    assert caller.grants.may("start", "anything")
    assert any("open to everyone" in r.getMessage() for r in caplog.records)


def test_chain_tells_missing_from_unrecognised_credentials() -> None:
    """No credential is Unauthenticated (401); an Authorization nobody accepts is Forbidden."""
    chain = CredentialChain([ApiKeyCheck(MemoryApiKeyStore)])

    with pytest.raises(Unauthenticated):
        chain.authenticate(CallerRequest(headers={}, source="x", scope={}))
    with pytest.raises(Forbidden):
        chain.authenticate(
            CallerRequest(headers={"Authorization": "Bearer a.b.c"}, source="x", scope={})
        )


_HEADER_BYTES = st.binary(min_size=0, max_size=300).map(
    lambda raw: bytes(b for b in raw if b not in (0x0A, 0x0D)).strip()
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["Authorization", "X-Api-Key"]),
    prefix=st.sampled_from([b"", b"Bearer ", b"bearer rk_", b"rk_", b"Bearer a.b."]),
    value=_HEADER_BYTES,
)
def test_any_credential_bytes_get_401_or_403_never_5xx(
    keyed_client: TestClient, name: str, prefix: bytes, value: bytes
) -> None:
    """Whatever bytes a credential header holds, the answer is 401 or 403."""
    response = keyed_client.get("/v1/runs", headers={name: prefix + value})

    assert response.status_code in (401, 403), response.text
