"""The GCP worker's OIDC verifier: Google-signed ID tokens for one service account only.

Tokens are signed with a locally generated RSA key whose self-signed certificate plays
Google's published certificates, so no test touches the network.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt

from core.domain.records import Message, RunId, RunSnapshot, StepName
from core.domain.status import Action, StepStatus
from core.engine.engine import Engine
from core.errors import ConfigurationError, InfrastructureError
from functions import wiring
from functions.http.app import ALL_ROUTES, create_app
from functions.http.auth import Forbidden, Unauthenticated
from functions.http.callers import OpenAuthenticator
from functions.http.oidc import CachedCerts, OidcVerifier
from functions.http.verifiers import verifier_for
from functions.settings import Settings
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore
from tests.support.entry_points import STEP_CALLS, TestClient, json_body

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "https://relay-worker-abc123-ew.a.run.app/v1/steps"
SERVICE_ACCOUNT = "relay-tasks@relay-test.iam.gserviceaccount.com"
KEY_ID = "test-key-1"


@dataclass(frozen=True)
class SigningKey:
    """A private key (as a google-auth signer) and its self-signed certificate."""

    signer: crypt.RSASigner
    certificate_pem: str


def make_signing_key(key_id: str) -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(
        signer=crypt.RSASigner.from_string(private_pem, key_id=key_id),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
    )


@pytest.fixture(scope="module")
def google_key() -> SigningKey:
    """The key playing Google's: its certificate is what the verifier trusts."""
    return make_signing_key(KEY_ID)


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    """Someone else's key, presenting Google's key id."""
    return make_signing_key(KEY_ID)


@pytest.fixture
def verifier(google_key: SigningKey) -> OidcVerifier:
    """A verifier trusting only ``google_key``, for ``AUDIENCE`` and ``SERVICE_ACCOUNT``."""
    return OidcVerifier(
        audience=AUDIENCE,
        service_account_email=SERVICE_ACCOUNT,
        certs_provider=lambda: {KEY_ID: google_key.certificate_pem},
    )


def claims(**overrides: Any) -> dict[str, Any]:
    """The claims of a Cloud Tasks OIDC token, valid now, with ``overrides`` applied."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "108234567890123456789",
        "sub": "108234567890123456789",
        "email": SERVICE_ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: SigningKey, **overrides: Any) -> str:
    return google_jwt.encode(key.signer, claims(**overrides)).decode()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def deliver(verifier: OidcVerifier, headers: Mapping[str, str], *, path: str = "/v1/steps") -> str:
    """Verify a POST of ``{}`` to ``path``; the principal."""
    return verifier.verify(method="POST", path=path, body=b"{}", headers=headers)


def refusal(
    verifier: OidcVerifier, headers: Mapping[str, str], *, path: str = "/v1/steps"
) -> Exception:
    with pytest.raises((Unauthenticated, Forbidden)) as caught:
        deliver(verifier, headers, path=path)
    return caught.value


# -- the verifier on its own ------------------------------------------------------------


def test_valid_token_is_accepted(verifier: OidcVerifier, google_key: SigningKey) -> None:
    """A fresh Google-signed token for this audience and service account passes."""
    deliver(verifier, bearer(token(google_key)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "accounts.google.com"},
        {"email": SERVICE_ACCOUNT.upper()},
        {"aud": ["https://elsewhere.example", AUDIENCE]},
        {"email_verified": "true"},
    ],
    ids=["issuer-without-scheme", "email-case", "audience-list", "email-verified-string"],
)
def test_accepted_variants_of_google_tokens(
    verifier: OidcVerifier, google_key: SigningKey, overrides: dict[str, Any]
) -> None:
    """Google's alternative issuer, email case, audience lists and string booleans pass."""
    deliver(verifier, bearer(token(google_key, **overrides)))


def test_header_name_is_case_insensitive(verifier: OidcVerifier, google_key: SigningKey) -> None:
    """A lower-case authorization header with a lower-case scheme is read like any other."""
    deliver(verifier, {"authorization": f"bearer {token(google_key)}"})


def test_missing_authorization_is_unauthenticated_with_a_bearer_challenge(
    verifier: OidcVerifier,
) -> None:
    """No Authorization header raises Unauthenticated (401) asking for a Bearer token."""
    error = refusal(verifier, {"Content-Type": "application/json"})

    assert isinstance(error, Unauthenticated)
    assert error.challenge.startswith("Bearer")


def now_minus(seconds: int) -> int:
    return int(time.time()) - seconds


def expired(key: SigningKey) -> str:
    return token(key, iat=now_minus(7200), exp=now_minus(3600))


OTHER_ACCOUNT = "x@evil.iam.gserviceaccount.com"


FORBIDDEN_CASES: list[tuple[str, Callable[[SigningKey, SigningKey], str], str]] = [
    ("not-bearer", lambda g, o: "Basic dXNlcjpwYXNz", "not a Bearer token"),
    ("empty-bearer", lambda g, o: "Bearer ", "not a Bearer token"),
    ("malformed", lambda g, o: "Bearer not.a.jwt", "not a JWT"),
    ("two-segments", lambda g, o: "Bearer abc.def", "not a JWT"),
    ("expired", lambda g, o: "Bearer " + expired(g), "expired"),
    ("issued-in-future", lambda g, o: "Bearer " + token(g, iat=now_minus(-3600)), "future"),
    ("no-exp", lambda g, o: "Bearer " + token(g, exp=None), "valid exp"),
    ("wrong-audience", lambda g, o: "Bearer " + token(g, aud="https://other.example"), "audience"),
    ("wrong-issuer", lambda g, o: "Bearer " + token(g, iss="https://evil.example"), "issuer"),
    ("wrong-email", lambda g, o: "Bearer " + token(g, email=OTHER_ACCOUNT), "not allowed on"),
    ("no-email", lambda g, o: "Bearer " + token(g, email=None), "not allowed on"),
    ("email-unverified", lambda g, o: "Bearer " + token(g, email_verified=False), "not verified"),
    ("other-key", lambda g, o: "Bearer " + token(o), "signature does not verify"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [(make, reason) for _, make, reason in FORBIDDEN_CASES],
    ids=[case for case, _, _ in FORBIDDEN_CASES],
)
def test_bad_tokens_are_forbidden_naming_the_failed_check_without_echoing_the_token(
    verifier: OidcVerifier,
    google_key: SigningKey,
    other_key: SigningKey,
    authorization: Callable[[SigningKey, SigningKey], str],
    reason: str,
) -> None:
    """Malformed, stale, misdirected or forged tokens raise Forbidden (403) saying why."""
    header = authorization(google_key, other_key)

    error = refusal(verifier, {"Authorization": header})

    assert isinstance(error, Forbidden)
    assert reason in str(error)
    credential = header.partition(" ")[2]
    assert not credential or credential not in str(error)


def test_unknown_key_id_is_forbidden(verifier: OidcVerifier) -> None:
    """A token naming a key id Google does not publish is refused."""
    stranger = make_signing_key("rotated-out")

    error = refusal(verifier, bearer(token(stranger)))

    assert isinstance(error, Forbidden)
    assert "not among Google's certificates" in str(error)


def test_unsigned_token_is_forbidden(verifier: OidcVerifier, google_key: SigningKey) -> None:
    """A token with ``alg: none`` and no signature never passes."""
    signed = token(google_key).split(".")
    header = google_jwt._helpers.unpadded_urlsafe_b64encode(  # type: ignore[attr-defined]
        json.dumps({"alg": "none", "typ": "JWT", "kid": KEY_ID}).encode()
    ).decode()

    error = refusal(verifier, bearer(f"{header}.{signed[1]}."))

    assert isinstance(error, Forbidden)
    assert "RS256" in str(error)


def test_claims_tampered_after_signing_are_forbidden(
    verifier: OidcVerifier, google_key: SigningKey
) -> None:
    """Swapping in another token's claims breaks the signature."""
    genuine = token(google_key, email=OTHER_ACCOUNT).split(".")
    wanted = token(google_key).split(".")

    error = refusal(verifier, bearer(f"{genuine[0]}.{wanted[1]}.{genuine[2]}"))

    assert "signature does not verify" in str(error)


def test_injected_clock_and_skew_decide_expiry(google_key: SigningKey) -> None:
    """A token just past ``exp`` passes within the skew and fails beyond it."""
    exp = int(time.time())
    signed = bearer(token(google_key, iat=exp - 3600, exp=exp))

    def verifier_at(now: float) -> OidcVerifier:
        return OidcVerifier(
            audience=AUDIENCE,
            service_account_email=SERVICE_ACCOUNT,
            certs_provider=lambda: {KEY_ID: google_key.certificate_pem},
            clock_skew_seconds=30,
            clock=lambda: now,
        )

    deliver(verifier_at(exp + 29), signed)
    with pytest.raises(Forbidden, match="expired"):
        deliver(verifier_at(exp + 31), signed)


# -- Google's certificates, fetched and cached ----------------------------------------


class CertsServer:
    """A local HTTP server publishing certificates the way Google does."""

    def __init__(self, certs: Mapping[str, str], cache_control: str) -> None:
        self.certs = dict(certs)
        self.cache_control = cache_control
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = json.dumps(server.certs).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", server.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v1/certs"


@pytest.fixture
def certs_server(google_key: SigningKey) -> Iterator[CertsServer]:
    """Google's certificate endpoint, played on 127.0.0.1 with ``max-age=600``."""
    server = CertsServer({KEY_ID: google_key.certificate_pem}, "public, max-age=600")
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    thread.join()


def test_certs_are_fetched_once_per_max_age(certs_server: CertsServer) -> None:
    """Certificates are reused until their max-age passes, then fetched again."""
    now = [1000.0]
    certs = CachedCerts(certs_server.url, clock=lambda: now[0])

    first = certs()
    now[0] += 599
    certs()
    assert certs_server.requests == 1
    now[0] += 2
    certs()

    assert certs_server.requests == 2
    assert set(first) == {KEY_ID}


def test_verifier_fetches_google_certs_from_the_configured_url(
    certs_server: CertsServer, google_key: SigningKey
) -> None:
    """Without an injected provider the verifier trusts what ``certs_url`` publishes."""
    verifier = OidcVerifier(
        audience=AUDIENCE, service_account_email=SERVICE_ACCOUNT, certs_url=certs_server.url
    )

    deliver(verifier, bearer(token(google_key)))
    deliver(verifier, bearer(token(google_key)))

    assert certs_server.requests == 1


def test_unreachable_certs_defer_the_delivery(certs_server: CertsServer) -> None:
    """With no certificates fetched yet, an unreachable endpoint raises a retryable error."""
    url = certs_server.url
    certs_server.httpd.shutdown()
    certs_server.httpd.server_close()

    with pytest.raises(InfrastructureError, match="cannot fetch signing certificates"):
        CachedCerts(url, timeout_seconds=2)()


# -- configuration ----------------------------------------------------------------------


def test_gcp_backend_verifies_oidc_for_the_worker_url_by_default() -> None:
    """RELAY_BACKEND=gcp builds an OidcVerifier; the audience defaults to RELAY_WORKER_URL."""
    built = verifier_for(
        Settings(backend="gcp", worker_url=AUDIENCE, tasks_service_account=SERVICE_ACCOUNT)
    )

    assert isinstance(built, OidcVerifier)
    assert AUDIENCE in repr(built)


def test_explicit_audience_wins_over_the_worker_url() -> None:
    """RELAY_TASKS_AUDIENCE, when set, is the audience tokens must carry."""
    built = verifier_for(
        Settings(
            backend="gcp",
            worker_url=AUDIENCE,
            tasks_audience="https://custom-audience.example",
            tasks_service_account=SERVICE_ACCOUNT,
        )
    )

    assert "https://custom-audience.example" in repr(built)


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        (Settings(backend="gcp", tasks_service_account=SERVICE_ACCOUNT), "RELAY_TASKS_AUDIENCE"),
        (Settings(backend="gcp", worker_url=AUDIENCE), "RELAY_TASKS_SERVICE_ACCOUNT"),
        (Settings(backend="aws"), "IAM"),
    ],
    ids=["gcp-no-audience", "gcp-no-service-account", "aws"],
)
def test_missing_configuration_is_named(settings: Settings, variable: str) -> None:
    """A gcp verifier without its settings, or any aws one, is a ConfigurationError saying why."""
    with pytest.raises(ConfigurationError, match=variable):
        verifier_for(settings)


# -- through the worker's HTTP routes -------------------------------------------------


@pytest.fixture
def oidc_client(engine: Engine, verifier: OidcVerifier) -> Iterator[TestClient]:
    """The whole HTTP app over the SQLite engine, verifying deliveries with OIDC."""
    app = create_app(
        engine=lambda: engine,
        verifier=verifier,
        authenticator=OpenAuthenticator("local"),
        include=ALL_ROUTES,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def first_step(oidc_client: TestClient) -> tuple[str, bytes]:
    """A started run of ``greet`` and the delivery body of its first step."""
    run_id = oidc_client.post("/v1/sagas/greet/runs", json={"name": "Ada"}).json()["run_id"]
    message = Message(RunId(run_id), StepName("write_text"), Action.EXECUTE, 1)
    return run_id, json_body(message.to_json())


def snapshot(store: SQLiteStateStore, run_id: str) -> RunSnapshot | None:
    return store.load_run(run_id=RunId(run_id))


REFUSED_DELIVERIES: list[tuple[str, Callable[[SigningKey, SigningKey], dict[str, str]], int]] = [
    ("no-token", lambda g, o: {}, 401),
    ("forged", lambda g, o: bearer(token(o)), 403),
    ("expired", lambda g, o: bearer(expired(g)), 403),
    ("wrong-service-account", lambda g, o: bearer(token(g, email=OTHER_ACCOUNT)), 403),
    ("wrong-audience", lambda g, o: bearer(token(g, aud="https://other.example")), 403),
]


@pytest.mark.parametrize(
    ("headers_for", "status"),
    [(make, status) for _, make, status in REFUSED_DELIVERIES],
    ids=[case for case, _, _ in REFUSED_DELIVERIES],
)
def test_unauthenticated_or_forged_delivery_is_refused_and_changes_nothing(
    oidc_client: TestClient,
    sqlite_store: SQLiteStateStore,
    sqlite_queue: SQLiteTaskQueue,
    first_step: tuple[str, bytes],
    google_key: SigningKey,
    other_key: SigningKey,
    headers_for: Callable[[SigningKey, SigningKey], dict[str, str]],
    status: int,
) -> None:
    """Without a valid token the worker answers 401/403 and run, queue and steps stay put."""
    run_id, body = first_step
    before = snapshot(sqlite_store, run_id)

    response = oidc_client.post(
        "/v1/steps", content=body, headers=headers_for(google_key, other_key)
    )

    assert response.status_code == status
    assert response.json()["error"] == ("unauthenticated" if status == 401 else "forbidden")
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert snapshot(sqlite_store, run_id) == before
    assert sqlite_queue.pending_count() == 1
    assert STEP_CALLS == {}


def test_valid_token_processes_the_step_and_logs_the_cloud_tasks_headers(
    oidc_client: TestClient,
    sqlite_store: SQLiteStateStore,
    first_step: tuple[str, bytes],
    google_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delivery with a valid token runs its step; the task name and retry count are logged."""
    run_id, body = first_step
    task_name = "projects/p/locations/l/queues/relay-steps/tasks/0a1b-run-write_text-1"
    headers = {
        **bearer(token(google_key)),
        "Content-Type": "application/json",
        "X-CloudTasks-TaskName": task_name,
        "X-CloudTasks-QueueName": "relay-steps",
        "X-CloudTasks-TaskRetryCount": "2",
        "X-CloudTasks-TaskExecutionCount": "1",
    }

    with caplog.at_level(logging.INFO, logger="relay.http"):
        response = oidc_client.post("/v1/steps", content=body, headers=headers)

    assert response.status_code == 200
    assert response.json()["status"] == "done"
    assert STEP_CALLS == {"write_text": 1}
    after = snapshot(sqlite_store, run_id)
    assert after is not None
    assert after.step("write_text").status is StepStatus.SUCCEEDED
    [record] = [r for r in caplog.records if r.getMessage() == "step delivery from Cloud Tasks"]
    expected = {
        "run_id": run_id,
        "step": "write_text",
        "attempt": 1,
        "task_name": task_name,
        "queue_name": "relay-steps",
        "task_retry_count": 2,
        "task_execution_count": 1,
    }
    assert {key: getattr(record, key) for key in expected} == expected


def test_token_of_another_audience_cannot_cancel_a_run(
    oidc_client: TestClient,
    sqlite_store: SQLiteStateStore,
    first_step: tuple[str, bytes],
    google_key: SigningKey,
) -> None:
    """Admin routes take the same verifier: a misdirected token is 403 and the run stays."""
    run_id, _ = first_step
    before = snapshot(sqlite_store, run_id)

    response = oidc_client.post(
        f"/v1/runs/{run_id}/cancel", headers=bearer(token(google_key, aud="https://x.example"))
    )

    assert response.status_code == 403
    assert snapshot(sqlite_store, run_id) == before


# -- the deployed worker target ---------------------------------------------------------


@pytest.fixture
def gcp_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The functions-framework ``worker`` target configured as on GCP (RELAY_BACKEND=gcp)."""
    from functions_framework.aio import create_asgi_app

    monkeypatch.setenv("RELAY_BACKEND", "gcp")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "relay-test")
    monkeypatch.setenv("RELAY_WORKER_URL", AUDIENCE)
    monkeypatch.setenv("RELAY_TASKS_SERVICE_ACCOUNT", SERVICE_ACCOUNT)
    wiring.reset_engine()  # forget settings read under another environment
    app = create_asgi_app(target="worker", source=str(ROOT / "functions" / "gcp.py"))
    with TestClient(app) as client:
        yield client
    sys.modules.pop("gcp", None)  # the framework loads the source file as module "gcp"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 403),
        ({"Authorization": "Bearer not-a-jwt"}, 403),
    ],
    ids=["no-token", "basic-auth", "malformed-token"],
)
def test_gcp_worker_target_refuses_deliveries_before_building_the_engine(
    gcp_worker: TestClient, headers: dict[str, str], status: int
) -> None:
    """On RELAY_BACKEND=gcp the worker target checks OIDC first; Firestore is never reached."""
    body = json_body(Message(RunId("r-1"), StepName("write_text"), Action.EXECUTE, 1).to_json())

    response = gcp_worker.post("/v1/steps", content=body, headers=headers)

    assert response.status_code == status
    assert wiring._engine is None
