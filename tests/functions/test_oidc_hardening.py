"""The OIDC verifier hardened as issue 10 asks (finding 8) and its per-route principals.

Lifetime rules (``nbf``, a one-hour cap, integer time claims only: no NaN, Infinity, bool,
float or ``10**400``), key ids, the certificate cache (capped ``max-age``, no redirects,
rate-limited refetch on an unknown ``kid``) and who may call which route. Keys are
generated locally; certificates are served from 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.auth import jwt as google_jwt

from core.engine.engine import Engine
from core.errors import InfrastructureError
from functions.http.app import ALL_ROUTES, create_app
from functions.http.auth import Forbidden
from functions.http.callers import OpenAuthenticator
from functions.http.oidc import CachedCerts, OidcVerifier, RoutePrincipals
from functions.http.verifiers import verifier_for
from functions.settings import Settings
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.functions.test_oidc_verifier import SigningKey, make_signing_key
from tests.support.entry_points import TestClient

AUDIENCE = "https://relay-worker.test/v1/steps"
TASKS = "relay-tasks@p.iam.gserviceaccount.com"
SCHEDULER = "relay-scheduler@p.iam.gserviceaccount.com"
PUSH = "relay-push@p.iam.gserviceaccount.com"
OPERATOR = "ops@example.com"
KEY_ID = "hardening-key"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    """The key playing Google's."""
    return make_signing_key(KEY_ID)


def make_verifier(
    key: SigningKey, principals: RoutePrincipals | None = None, **options: Any
) -> OidcVerifier:
    return OidcVerifier(
        audience=AUDIENCE,
        service_account_email=TASKS,
        principals=principals,
        certs_provider=lambda: {KEY_ID: key.certificate_pem},
        **options,
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "sub": "1",
        "email": TASKS,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: SigningKey, **overrides: Any) -> str:
    return google_jwt.encode(key.signer, claims(**overrides)).decode()


def raw_token(key: SigningKey, claims_json: str, header: Mapping[str, Any] | None = None) -> str:
    """A token whose claims are exactly ``claims_json`` (JSON Python would not write)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = header if header is not None else {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(claims_json.encode())}"
    return f"{signing_input}.{b64(key.signer.sign(signing_input.encode()))}"


def check(verifier: OidcVerifier, value: str, path: str = "/v1/steps") -> str:
    headers = {"Authorization": f"Bearer {value}"}
    return verifier.verify(method="POST", path=path, body=b"", headers=headers)


def refused(verifier: OidcVerifier, value: str, path: str = "/v1/steps") -> str:
    with pytest.raises(Forbidden) as caught:
        check(verifier, value, path)
    return str(caught.value)


# -- lifetime ---------------------------------------------------------------------------


def test_not_before_in_the_future_is_refused(key: SigningKey) -> None:
    """``nbf`` beyond the skew is refused; within it the token passes."""
    now = int(time.time())
    verifier = make_verifier(key, clock_skew_seconds=30)

    assert "nbf" in refused(verifier, token(key, nbf=now + 120))
    assert check(verifier, token(key, nbf=now + 20)) == f"oidc:{TASKS}"


@pytest.mark.parametrize(("lifetime", "accepted"), [(3600, True), (3660, True), (7200, False)])
def test_lifetime_is_capped_at_one_hour_plus_skew(
    key: SigningKey, lifetime: int, accepted: bool
) -> None:
    """``exp - iat`` over an hour (plus the skew) is not a Google ID token."""
    now = int(time.time())
    signed = token(key, iat=now, exp=now + lifetime)
    verifier = make_verifier(key)

    if accepted:
        check(verifier, signed)
    else:
        assert "lifetime" in refused(verifier, signed)


def test_exp_before_iat_is_refused(key: SigningKey) -> None:
    """A token that expires before it is issued is junk."""
    now = int(time.time())
    assert "expires before" in refused(make_verifier(key), token(key, iat=now, exp=now - 1))


def valid_claims_json(**raw: str) -> str:
    """Claims JSON with ``raw`` values spliced in verbatim."""
    parts = {k: json.dumps(v) for k, v in claims().items()}
    parts.update(raw)
    return "{" + ",".join(f'"{k}":{v}' for k, v in parts.items()) + "}"


@pytest.mark.parametrize(
    "raw",
    [
        {"exp": "Infinity"},
        {"exp": "NaN"},
        {"exp": "-Infinity"},
        {"exp": "1e999"},
        {"exp": "1" + "0" * 400},
        {"exp": "true"},
        {"exp": str(float(int(time.time()) + 600))},
        {"exp": '"9999999999"'},
        {"iat": "null"},
        {"nbf": "NaN"},
        {"nbf": "1" + "0" * 400},
    ],
    ids=[
        "exp-infinity",
        "exp-nan",
        "exp-minus-infinity",
        "exp-float-overflow",
        "exp-10e400",
        "exp-bool",
        "exp-float",
        "exp-string",
        "iat-null",
        "nbf-nan",
        "nbf-huge",
    ],
)
def test_time_claims_must_be_integers_in_range(key: SigningKey, raw: dict[str, str]) -> None:
    """NaN, Infinity, booleans, floats, strings and huge integers are refused, never a crash."""
    message = refused(make_verifier(key), raw_token(key, valid_claims_json(**raw)))

    assert "not a JWT" in message or "valid" in message


def test_token_without_a_key_id_is_refused(key: SigningKey) -> None:
    """Google always names its key; a token without ``kid`` is not tried against every key."""
    unnamed = raw_token(key, json.dumps(claims()), header={"alg": "RS256", "typ": "JWT"})

    assert "kid" in refused(make_verifier(key), unnamed)


@pytest.mark.parametrize(
    "value",
    ["a.b.c.d", "é.é.é", "a b.c.d", "!!.??.**", "." * 2, "x" * 9000],
    ids=["four-parts", "non-ascii", "space", "not-base64url", "empty-parts", "oversize"],
)
def test_malformed_jwts_are_forbidden(key: SigningKey, value: str) -> None:
    """Anything that is not three base64url segments is refused before decoding."""
    assert "not a JWT" in refused(make_verifier(key), value)


def test_huge_exp_through_http_is_403_and_writes_nothing(
    engine: Engine,
    key: SigningKey,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
) -> None:
    """``exp = 10**400`` (the audit's 500) answers 403 on the worker route."""
    app = create_app(
        engine=lambda: engine,
        verifier=make_verifier(key),
        authenticator=OpenAuthenticator("local"),
        include=ALL_ROUTES,
    )
    value = raw_token(key, valid_claims_json(exp="1" + "0" * 400))

    with TestClient(app) as client:
        response = client.post(
            "/v1/steps",
            content=b"{}",
            headers={"Authorization": f"Bearer {value}", "Content-Type": "application/json"},
        )

    assert response.status_code == 403
    assert sqlite_store.list_runs() == []
    assert sqlite_queue.pending_count() == 0


# -- per-route principals ---------------------------------------------------------------

ROUTED = RoutePrincipals(
    tasks=TASKS, operators=frozenset({OPERATOR}), scheduler=SCHEDULER, push=PUSH
)


@pytest.mark.parametrize(
    ("path", "email", "accepted"),
    [
        ("/v1/steps", TASKS, True),
        ("/v1/steps", SCHEDULER, False),
        ("/v1/steps", OPERATOR, False),
        ("/v1/schedules/nightly", SCHEDULER, True),
        ("/v1/schedules/nightly", TASKS, False),
        ("/v1/sweep", SCHEDULER, True),
        ("/v1/sweep", PUSH, False),
        ("/v1/events", PUSH, True),
        ("/v1/events", TASKS, False),
        ("/v1/runs/r-1/retry", OPERATOR, True),
        ("/v1/runs/r-1/cancel", OPERATOR.upper(), True),
        ("/v1/runs/r-1/cancel", TASKS, False),
        ("/v1/runs/r-1/cancel?x=1", SCHEDULER, False),
        ("/v1/steps/../runs/r-1/cancel", OPERATOR, False),
        ("/v1/elsewhere", TASKS, False),
    ],
)
def test_each_route_accepts_only_its_principals(
    key: SigningKey, path: str, email: str, accepted: bool
) -> None:
    """Steps: Cloud Tasks; schedules and sweep: Scheduler; events: push; admin: operators."""
    verifier = make_verifier(key, ROUTED)
    signed = token(key, email=email)

    if accepted:
        assert check(verifier, signed, path) == f"oidc:{email.lower()}"
    else:
        refused(verifier, signed, path)


def test_without_operators_admin_routes_are_refused_naming_the_variable(key: SigningKey) -> None:
    """No RELAY_OPERATOR_EMAILS: retry and cancel answer 403 saying what to set."""
    verifier = make_verifier(key)  # tasks account only

    message = refused(verifier, token(key), "/v1/runs/r-1/cancel")

    assert "RELAY_OPERATOR_EMAILS" in message


def test_scheduler_and_push_default_to_the_tasks_account(key: SigningKey) -> None:
    """Unset scheduler and push accounts fall back to RELAY_TASKS_SERVICE_ACCOUNT."""
    verifier = make_verifier(key)

    for path in ("/v1/sweep", "/v1/schedules/x", "/v1/events"):
        assert check(verifier, token(key), path) == f"oidc:{TASKS}"


def test_settings_configure_the_route_principals(key: SigningKey) -> None:
    """verifier_for reads the operator, scheduler and push variables."""
    settings = Settings.from_env(
        {
            "RELAY_BACKEND": "gcp",
            "RELAY_WORKER_URL": AUDIENCE,
            "RELAY_TASKS_SERVICE_ACCOUNT": TASKS,
            "RELAY_OPERATOR_EMAILS": f" {OPERATOR} , other@example.com",
            "RELAY_SCHEDULER_SERVICE_ACCOUNT": SCHEDULER,
            "RELAY_PUSH_SERVICE_ACCOUNT": PUSH,
            "RELAY_OIDC_CERTS_URL": "http://127.0.0.1:1/certs",
        }
    )
    built = verifier_for(settings)
    assert isinstance(built, OidcVerifier)
    built._certs = lambda: {KEY_ID: key.certificate_pem}  # type: ignore[method-assign]

    assert check(built, token(key, email=OPERATOR), "/v1/runs/r/retry") == f"oidc:{OPERATOR}"
    assert check(built, token(key, email=SCHEDULER), "/v1/sweep") == f"oidc:{SCHEDULER}"
    assert check(built, token(key, email=PUSH), "/v1/events") == f"oidc:{PUSH}"


# -- the certificate cache --------------------------------------------------------------


class Publisher:
    """Serves ``{kid: PEM}`` on 127.0.0.1 (or a redirect), counting requests."""

    def __init__(self) -> None:
        self.certs: dict[str, str] = {}
        self.cache_control = "public, max-age=600"
        self.redirect_to: str | None = None
        self.requests = 0
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                publisher.requests += 1
                if publisher.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", publisher.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(publisher.certs).encode()
                self.send_response(200)
                self.send_header("Cache-Control", publisher.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def publisher(key: SigningKey) -> Iterator[Publisher]:
    """Google's certificate endpoint, played locally."""
    server = Publisher()
    server.certs = {KEY_ID: key.certificate_pem}
    yield server
    server.close()


@pytest.fixture
def second_publisher() -> Iterator[Publisher]:
    """Another server, the target of a redirect."""
    server = Publisher()
    yield server
    server.close()


def test_max_age_is_honoured_but_capped_at_an_hour(publisher: Publisher) -> None:
    """A max-age of a year keeps the certificates one hour, then they are refetched."""
    publisher.cache_control = "public, max-age=31536000"
    now = [0.0]
    certs = CachedCerts(publisher.url, clock=lambda: now[0])

    certs()
    now[0] = 3599.0
    certs()
    assert publisher.requests == 1
    now[0] = 3601.0
    certs()

    assert publisher.requests == 2


def test_redirects_are_not_followed(publisher: Publisher, second_publisher: Publisher) -> None:
    """A certificate endpoint that redirects yields an error; the target is never asked."""
    publisher.redirect_to = second_publisher.url

    with pytest.raises(InfrastructureError, match="redirect"):
        CachedCerts(publisher.url, timeout_seconds=2)()

    assert second_publisher.requests == 0


def test_unknown_key_id_refetches_at_most_once_per_interval(publisher: Publisher) -> None:
    """Unknown key ids trigger a refetch, but not more often than the interval allows."""
    now = [0.0]
    certs = CachedCerts(publisher.url, clock=lambda: now[0], refetch_interval_seconds=30)
    certs()

    now[0] = 10.0
    certs.refetch_for_unknown_key("junk-1")  # 10 s after the fetch: too soon
    now[0] = 31.0
    certs.refetch_for_unknown_key("junk-2")  # refetched
    certs.refetch_for_unknown_key("junk-3")  # too soon again
    certs.refetch_for_unknown_key(KEY_ID)  # known: no refetch

    assert publisher.requests == 2


def test_rotated_key_is_picked_up_on_first_use(publisher: Publisher, key: SigningKey) -> None:
    """When Google starts signing with a new key, the verifier refetches and accepts it."""
    verifier = OidcVerifier(audience=AUDIENCE, service_account_email=TASKS, certs_url=publisher.url)
    check(verifier, token(key))
    rotated = make_signing_key("rotated-in")
    publisher.certs["rotated-in"] = rotated.certificate_pem

    with pytest.MonkeyPatch.context() as patch:  # the last fetch was just now: allow one
        patch.setattr(verifier._cache, "_fetched_at", float("-inf"))
        assert check(verifier, token(rotated)) == f"oidc:{TASKS}"

    assert publisher.requests == 2
    assert "not among" in refused(verifier, token(make_signing_key("never-published")))
    assert publisher.requests == 2  # within the interval: no third fetch
