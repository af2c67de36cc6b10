"""OIDC verification of deliveries on GCP: Cloud Tasks, Pub/Sub push and Cloud Scheduler.

Google signs the ID token it attaches to each delivery (``Authorization: Bearer <jwt>``)
with keys it publishes at ``GOOGLE_CERTS_URL`` (``functions/http/oidc_certs.py``). The
worker accepts a delivery only when the RS256 signature verifies against those keys, the
token is within its lifetime (``iat``, ``nbf``, ``exp`` integers, a lifetime of at most
an hour), was issued by Google, is meant for this worker (``aud``) and names, verified,
an identity allowed on *that route* (``RoutePrincipals``): step deliveries from the
Cloud Tasks account, schedules and sweeps from the scheduler's, events from Pub/Sub
push's, retry and cancel from operators only (issue 10, findings 3 and 8). google-auth
(RSA verification) is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from functions.http.auth import Forbidden, Unauthenticated, header_value
from functions.http.oidc_certs import GOOGLE_CERTS_URL, CachedCerts, check_certs_url

__all__ = [
    "GOOGLE_CERTS_URL",
    "CachedCerts",
    "OidcVerifier",
    "RoutePrincipals",
    "check_certs_url",
]

log = logging.getLogger("relay.auth")

GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")
DEFAULT_CLOCK_SKEW_SECONDS: Final = 60.0
MAX_TOKEN_LIFETIME_SECONDS: Final = 3600
"""Google ID tokens live one hour; a longer ``exp - iat`` is not one of them."""
MAX_TOKEN_BYTES: Final = 8 * 1024
"""Google ID tokens are about 1 KiB; anything much larger is not one."""
_MAX_TIME_CLAIM: Final = 2**40
"""Far beyond any real epoch second; bigger integers are junk (and would overflow floats)."""

_CHALLENGE: Final = 'Bearer realm="relay-worker"'
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*")
_ADMIN_PATH: Final = re.compile(r"/v1/runs/[^/]+/(?:retry|cancel)")


@dataclass(frozen=True, slots=True)
class RoutePrincipals:
    """Which verified emails may call which authenticated route.

    Args:
        tasks: ``RELAY_TASKS_SERVICE_ACCOUNT``: ``POST /v1/steps``.
        operators: ``RELAY_OPERATOR_EMAILS``: retry and cancel (none: refused).
        scheduler: ``RELAY_SCHEDULER_SERVICE_ACCOUNT``: schedules and the sweep.
        push: ``RELAY_PUSH_SERVICE_ACCOUNT``: ``POST /v1/events``.
    """

    tasks: str
    operators: frozenset[str] = frozenset()
    scheduler: str | None = None
    push: str | None = None

    def allowed(self, path: str) -> tuple[frozenset[str], str]:
        """The emails allowed on ``path`` and the variable that configures them.

        Raises:
            Forbidden: the path is no authenticated route, or an admin route while no
                operator is configured.
        """
        route = unquote(path.partition("?")[0])
        if route == "/v1/steps":
            return _emails(self.tasks), "RELAY_TASKS_SERVICE_ACCOUNT"
        if route == "/v1/sweep" or route.startswith("/v1/schedules/"):
            return _emails(self.scheduler or self.tasks), "RELAY_SCHEDULER_SERVICE_ACCOUNT"
        if route == "/v1/events":
            return _emails(self.push or self.tasks), "RELAY_PUSH_SERVICE_ACCOUNT"
        if _ADMIN_PATH.fullmatch(route):
            if not self.operators:
                raise Forbidden(
                    "retry and cancel are refused: no operator is configured; set "
                    "RELAY_OPERATOR_EMAILS to the emails allowed to call them"
                )
            return frozenset(e.lower() for e in self.operators), "RELAY_OPERATOR_EMAILS"
        raise Forbidden("this path takes no delivery credentials")


def _emails(email: str) -> frozenset[str]:
    return frozenset({email.lower()})


class OidcVerifier:
    """Accepts deliveries carrying a Google-signed ID token for the route's principals.

    Args:
        audience: The ``aud`` the token must carry (the worker URL unless configured).
        service_account_email: The Cloud Tasks account (and, unless ``principals`` says
            otherwise, the scheduler's and Pub/Sub push's).
        principals: Who may call which route; built from ``service_account_email``
            (no operators) when omitted.
        certs_url: Where Google's signing certificates are fetched from
            (``RELAY_OIDC_CERTS_URL``; see ``check_certs_url``).
        certs_provider: Returns ``{key id: PEM certificate}``; defaults to a
            ``CachedCerts`` of ``certs_url``. Tests inject their own.
        issuers: Accepted ``iss`` values.
        clock_skew_seconds: Tolerance on ``iat``, ``nbf`` and ``exp``.
        clock: Epoch seconds; injectable so tests can present stale tokens.

    Raises:
        ConfigurationError: ``certs_url`` is neither https nor http on a loopback host.
    """

    def __init__(
        self,
        *,
        audience: str,
        service_account_email: str,
        principals: RoutePrincipals | None = None,
        certs_url: str = GOOGLE_CERTS_URL,
        certs_provider: Callable[[], Mapping[str, str]] | None = None,
        issuers: tuple[str, ...] = GOOGLE_ISSUERS,
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._audience = audience
        self._principals = principals or RoutePrincipals(tasks=service_account_email)
        self._cache = None if certs_provider else CachedCerts(check_certs_url(certs_url))
        self._certs = certs_provider or self._cache
        self._issuers = frozenset(issuers)
        self._skew_seconds = clock_skew_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"OidcVerifier(audience={self._audience!r}, service_account={self._principals.tasks!r})"
        )

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        """Accept the delivery only with a valid Google ID token allowed on ``path``.

        The checks run in order (signature first), so a forged token is reported as
        forged whatever its claims say. Messages name the failed check, never the token.

        Returns:
            ``oidc:<email>``.

        Raises:
            Unauthenticated: there is no ``Authorization: Bearer`` header.
            Forbidden: the token is malformed, unsigned by Google, outside its lifetime,
                for another audience or issuer, or names an identity not allowed here.
        """
        token = _bearer_token(headers)
        header, claims, signed_section, signature = _parse(token)
        self._check_signature(header, signed_section, signature)
        self._check_times(claims)
        return self._check_claims(claims, path)

    def _check_signature(
        self, header: Mapping[str, Any], signed_section: bytes, signature: bytes
    ) -> None:
        if header.get("alg") != "RS256":
            raise Forbidden("token is not signed with RS256, the algorithm Google uses")
        key_id = header.get("kid")
        if not isinstance(key_id, str) or not key_id or len(key_id) > 128:
            raise Forbidden("token names no key id (kid) of Google's certificates")
        assert self._certs is not None
        certs = self._certs()
        if key_id not in certs and self._cache is not None:
            certs = self._cache.refetch_for_unknown_key(key_id)  # Google may have rotated
        if key_id not in certs:
            raise Forbidden("token is signed with a key that is not among Google's certificates")
        if not _rsa_verifier(certs[key_id]).verify(signed_section, signature):
            raise Forbidden("token signature does not verify against Google's certificates")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        issued_at, expires_at = _time_claim(claims, "iat"), _time_claim(claims, "exp")
        not_before = _time_claim(claims, "nbf") if "nbf" in claims else issued_at
        now, skew = self._clock(), self._skew_seconds
        if expires_at + skew < now:
            raise Forbidden("token expired")
        if issued_at - skew > now:
            raise Forbidden("token is issued in the future; check the worker's clock")
        if not_before - skew > now:
            raise Forbidden("token is not valid yet (nbf); check the worker's clock")
        if expires_at <= issued_at:
            raise Forbidden("token expires before it is issued")
        if expires_at - issued_at > MAX_TOKEN_LIFETIME_SECONDS + skew:
            raise Forbidden("token lifetime exceeds one hour; Google ID tokens live one hour")

    def _check_claims(self, claims: Mapping[str, Any], path: str) -> str:
        if claims.get("iss") not in self._issuers:
            raise Forbidden("token issuer is not Google")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self._audience not in audiences:
            raise Forbidden(
                "token audience is not this worker's (RELAY_TASKS_AUDIENCE or RELAY_WORKER_URL)"
            )
        allowed, variable = self._principals.allowed(path)
        email = claims.get("email")
        if not isinstance(email, str) or email.lower() not in allowed:
            raise Forbidden(f"token identity is not allowed on this route ({variable})")
        if claims.get("email_verified") not in (True, "true"):
            raise Forbidden("token email is not verified")
        return f"oidc:{email.lower()}"


@functools.lru_cache(maxsize=16)
def _rsa_verifier(certificate_pem: str) -> Any:
    """A google-auth RSA verifier per certificate, parsed once (Google publishes 2 or 3)."""
    from google.auth import crypt

    return crypt.RSAVerifier.from_string(certificate_pem)  # type: ignore[no-untyped-call]


def _bearer_token(headers: Mapping[str, str]) -> str:
    value = header_value(headers, "Authorization")
    if not value:
        raise Unauthenticated("missing Authorization header", challenge=_CHALLENGE)
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Forbidden("Authorization header is not a Bearer token")
    return token.strip()


def _parse(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any], bytes, bytes]:
    """Header, claims, signed bytes and signature of a compact JWT (nothing verified).

    Strict: base64url segments only, JSON objects without NaN/Infinity.
    """
    segments = token.split(".")
    if (
        len(token) > MAX_TOKEN_BYTES
        or not token.isascii()
        or len(segments) != 3
        or not all(_SEGMENT.fullmatch(segment) for segment in segments)
    ):
        raise Forbidden("bearer token is not a JWT")
    try:
        header = _json(_b64decode(segments[0]))
        claims = _json(_b64decode(segments[1]))
        signature = _b64decode(segments[2])
    except (ValueError, RecursionError):  # binascii, Unicode and JSON errors included
        raise Forbidden("bearer token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Forbidden("bearer token is not a JWT")
    return header, claims, f"{segments[0]}.{segments[1]}".encode(), signature


def _json(data: bytes) -> Any:
    return json.loads(data, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _time_claim(claims: Mapping[str, Any], name: str) -> int:
    """An ``iat``/``nbf``/``exp`` claim: an integer in epoch range (no bool, float or junk)."""
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _MAX_TIME_CLAIM:
        raise Forbidden(f"token lacks a valid {name} claim (integer epoch seconds)")
    return value
