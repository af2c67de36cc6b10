"""RELAY_API_AUTH=jwt: bearer JWTs checked against an issuer's JWKS served on loopback.

Tokens are really signed (RSA, with ``cryptography`` through PyJWT) and the key set is
really fetched over HTTP from a server in the test, so caching, refetching on an unknown
``kid`` and refusing redirects are exercised as deployed.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from core.errors import ConfigurationError, InfrastructureError
from functions.http.auth import Forbidden
from functions.http.callers import CallerRequest
from functions.http.jwt_auth import JwksCache, JwtCheck, check_fetch_url
from functions.settings import Settings

ISSUER = "https://issuer.example"
AUDIENCE = "relay-api"


class Key:
    """An RSA signing key with its JWK."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwk = {**public_jwk, "kid": kid, "use": "sig", "alg": "RS256"}

    def sign(self, claims: Mapping[str, Any], **header: Any) -> str:
        return jwt.encode(
            dict(claims), self.private, algorithm="RS256", headers={"kid": self.kid, **header}
        )


class JwksServer:
    """Serves ``/jwks`` (the current keys) and ``/moved`` (a redirect) on 127.0.0.1."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/moved":
                    self.send_response(302)
                    self.send_header("Location", "/jwks")
                    self.end_headers()
                    return
                server.fetches += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=999999")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key() -> Key:
    return Key("k1")


@pytest.fixture
def server(key: Key) -> Iterator[JwksServer]:
    started = JwksServer()
    started.keys = [key.jwk]
    yield started
    started.close()


@pytest.fixture
def monotonic() -> Clock:
    return Clock()


@pytest.fixture
def check(server: JwksServer, monotonic: Clock) -> JwtCheck:
    keys = JwksCache(jwks_url=f"{server.url}/jwks", issuer=ISSUER, clock=monotonic)
    return JwtCheck(issuer=ISSUER, audience=AUDIENCE, keys=keys)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 600,
        "relay_grants": "order:start,read;stock_report:read",
        **overrides,
    }


def request(token: str) -> CallerRequest:
    return CallerRequest(headers={"Authorization": f"Bearer {token}"}, source="10.0.0.9", scope={})


def test_a_valid_token_names_the_caller_and_its_grants(check: JwtCheck, key: Key) -> None:
    """sub becomes the identity; the grants claim decides what it may do."""
    caller = check.check(request(key.sign(claims())))

    assert caller is not None
    assert (caller.identity, caller.kind, caller.source) == ("jwt:user-1", "jwt", "10.0.0.9")
    assert caller.grants.may("start", "order") and caller.grants.may("read", "stock_report")
    assert not caller.grants.may("start", "stock_report")


def test_grants_may_be_a_list_and_default_to_none(check: JwtCheck, key: Key) -> None:
    """A list of entries is accepted; a token without the claim may do nothing."""
    listed = check.check(request(key.sign(claims(relay_grants=["order:read", "*:start"]))))
    bare = check.check(
        request(key.sign({k: v for k, v in claims().items() if k != "relay_grants"}))
    )

    assert (
        listed is not None
        and listed.grants.may("start", "any")
        and listed.grants.may("read", "order")
    )
    assert bare is not None and not bare.grants.may("read", "order")


def test_a_request_without_a_bearer_jwt_is_not_this_checks(check: JwtCheck) -> None:
    """No header, another scheme or an API key is left to the other checks (None)."""
    assert check.check(CallerRequest(headers={}, source="x", scope={})) is None
    assert (
        check.check(CallerRequest(headers={"Authorization": "Basic abc"}, source="x", scope={}))
        is None
    )
    assert check.check(request("rk_aaaaaaaaaaaa_" + "s" * 43)) is None


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(
    header: Mapping[str, Any], payload: str | Mapping[str, Any], signature: bytes = b"x"
) -> str:
    body = payload if isinstance(payload, str) else b64(payload)
    return f"{b64(header)}.{body}.{b64(signature)}"


def tampered(token: str) -> str:
    """``token`` with its claims replaced after signing."""
    header, _, signature = token.split(".")
    return f"{header}.{b64(claims(sub='admin'))}.{signature}"


BAD_TOKENS = {
    "expired": lambda k: k.sign(claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)),
    "not-yet-valid": lambda k: k.sign(claims(nbf=int(time.time()) + 3600)),
    "wrong-audience": lambda k: k.sign(claims(aud="someone-else")),
    "wrong-issuer": lambda k: k.sign(claims(iss="https://evil.example")),
    "no-exp": lambda k: k.sign({k2: v for k2, v in claims().items() if k2 != "exp"}),
    "lives-too-long": lambda k: k.sign(claims(exp=int(time.time()) + 10 * 24 * 3600)),
    "exp-10**400": lambda k: k.sign(claims(exp=10**400)),
    "exp-float-huge": lambda k: k.sign(claims(exp=1e300)),
    "exp-string": lambda k: k.sign(claims(exp="tomorrow")),
    "exp-bool": lambda k: k.sign(claims(exp=True)),
    "issued-in-future": lambda k: k.sign(claims(iat=int(time.time()) + 3600)),
    "bad-grants": lambda k: k.sign(claims(relay_grants="order:delete")),
    "grants-not-text": lambda k: k.sign(claims(relay_grants={"order": "read"})),
    "alg-none": lambda k: forged({"alg": "none", "kid": "k1"}, claims(), b""),
    "alg-hs256": lambda k: jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"kid": "k1"}),
    "unknown-kid": lambda k: Key("k9").sign(claims()),
    "tampered": lambda k: tampered(k.sign(claims())),
    "kid-not-text": lambda k: forged({"alg": "RS256", "kid": 7}, claims()),
    "header-not-json": lambda k: "bm90IGpzb24." + b64(claims()) + ".c2ln",
    "payload-not-json": lambda k: forged({"alg": "RS256", "kid": "k1"}, "bm90IGpzb24"),
    "exp-infinity-text": lambda k: forged({"alg": "RS256", "kid": "k1"}, b64(b'{"exp": Infinity}')),
    "nested": lambda k: forged({"alg": "RS256", "kid": "k1"}, b64(b"[" * 5000 + b"]" * 5000)),
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_tokens_are_forbidden_without_echoing_them(
    check: JwtCheck, key: Key, name: str
) -> None:
    """Every malformed, forged, stale or over-long token is a 403 (Forbidden), never a crash."""
    token = BAD_TOKENS[name](key)

    with pytest.raises(Forbidden) as refused:
        check.check(request(token))

    assert token not in str(refused.value)


def test_exp_of_infinity_signed_is_forbidden(check: JwtCheck, key: Key) -> None:
    """A correctly signed token whose exp is Infinity (a JSON extension) is refused."""
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    payload = f'{{"iss": "{ISSUER}", "aud": "{AUDIENCE}", "exp": Infinity}}'.encode()
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), key.private
    )

    with pytest.raises(Forbidden):
        check.check(request(f"{signing_input}.{b64(signature)}"))


def test_keys_are_cached_and_an_unknown_kid_refetches_at_most_once_per_interval(
    check: JwtCheck, server: JwksServer, monotonic: Clock, key: Key
) -> None:
    """A rotated-in key is found after one refetch; junk kids do not drive more fetches."""
    assert check.check(request(key.sign(claims()))) is not None  # the first fetch
    rotated = Key("k2")
    server.keys = [*server.keys, rotated.jwk]
    fetches = server.fetches

    monotonic.now += 31  # past the refetch interval: one refetch finds k2
    assert check.check(request(rotated.sign(claims()))) is not None
    for _ in range(5):
        with pytest.raises(Forbidden):
            check.check(request(Key("junk").sign(claims())))

    assert server.fetches == fetches + 1


def test_a_redirected_key_set_is_not_followed(server: JwksServer, key: Key) -> None:
    """The JWKS URL answering 302 is an outage (503), not a hop to another host."""
    keys = JwksCache(jwks_url=f"{server.url}/moved", issuer=ISSUER)
    check = JwtCheck(issuer=ISSUER, audience=AUDIENCE, keys=keys)

    with pytest.raises(InfrastructureError):
        check.check(request(key.sign(claims())))


def test_the_key_set_comes_from_the_issuers_discovery_document(key: Key) -> None:
    """Without RELAY_JWT_JWKS_URL the jwks_uri of the issuer's discovery document is used."""
    jwks = JwksServer()
    jwks.keys = [key.jwk]
    issuer_url = jwks.url
    try:

        class Discovery(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"issuer": issuer_url, "jwks_uri": f"{jwks.url}/jwks"}).encode()
                self.send_response(200 if self.path == "/.well-known/openid-configuration" else 404)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        issuer = f"http://127.0.0.1:{httpd.server_address[1]}"
        check = JwtCheck(
            issuer=issuer, audience=AUDIENCE, keys=JwksCache(jwks_url=None, issuer=issuer)
        )
        caller = check.check(request(key.sign(claims(iss=issuer))))
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    finally:
        jwks.close()

    assert caller is not None and caller.identity == "jwt:user-1"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "RELAY_JWT_ISSUER"),
        ({"RELAY_JWT_ISSUER": ISSUER}, "RELAY_JWT_AUDIENCE"),
        (
            {"RELAY_JWT_ISSUER": "http://issuer.example", "RELAY_JWT_AUDIENCE": "a"},
            "RELAY_JWT_ISSUER",
        ),
        (
            {
                "RELAY_JWT_ISSUER": ISSUER,
                "RELAY_JWT_AUDIENCE": "a",
                "RELAY_JWT_JWKS_URL": "ftp://x",
            },
            "RELAY_JWT_JWKS_URL",
        ),
    ],
)
def test_jwt_configuration_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A missing issuer or audience, or a non-https URL, stops startup naming the variable."""
    settings = Settings.from_env({"RELAY_API_AUTH": "jwt", **env})

    with pytest.raises(ConfigurationError, match=variable):
        JwtCheck.from_settings(settings)


def test_fetch_urls_must_be_https_or_loopback_http() -> None:
    """Plain http is refused except on loopback (the tests' own servers)."""
    assert check_fetch_url("https://x.example/jwks", variable="V")
    assert check_fetch_url("http://127.0.0.1:9/jwks", variable="V")
    with pytest.raises(ConfigurationError):
        check_fetch_url("http://x.example/jwks", variable="V")
