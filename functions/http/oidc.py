"""OIDC verification of deliveries on GCP: Cloud Tasks, Pub/Sub push and Cloud Scheduler.

Google signs the ID token it attaches to each delivery (``Authorization: Bearer <jwt>``)
with keys it publishes at ``GOOGLE_CERTS_URL``. The worker accepts a delivery only when
the signature verifies against those keys, the token is fresh, was issued by Google, is
meant for this worker (``aud``) and names the configured service account (``email``,
verified). google-auth is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from core.errors import ConfigurationError, InfrastructureError
from functions.http.auth import Forbidden, Unauthenticated, header_value

log = logging.getLogger("relay.auth")

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
"""Google's OAuth2 signing certificates as ``{key id: PEM certificate}``."""
GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")
DEFAULT_CLOCK_SKEW_SECONDS: Final = 60.0
DEFAULT_CERTS_MAX_AGE_SECONDS: Final = 300.0
"""How long fetched certificates are kept when the response carries no ``max-age``."""
MAX_TOKEN_BYTES: Final = 8 * 1024
"""Google ID tokens are about 1 KiB; anything much larger is not one."""

_CHALLENGE: Final = 'Bearer realm="relay-worker"'
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_AGE = re.compile(r"max-age=(\d+)")


class OidcVerifier:
    """Accepts deliveries carrying a Google-signed ID token for one service account.

    Args:
        audience: The ``aud`` the token must carry (the worker URL unless configured).
        service_account_email: The ``email`` the token must name (verified by Google).
        certs_url: Where Google's signing certificates are fetched from
            (``RELAY_OIDC_CERTS_URL``; see ``check_certs_url``).
        certs_provider: Returns ``{key id: PEM certificate}``; defaults to a cache of
            ``certs_url`` honouring its ``Cache-Control: max-age``. Tests inject their own.
        issuers: Accepted ``iss`` values.
        clock_skew_seconds: Tolerance on ``iat`` and ``exp``.
        clock: Epoch seconds; injectable so tests can present stale tokens.

    Raises:
        ConfigurationError: ``certs_url`` is neither https nor http on a loopback host.
    """

    def __init__(
        self,
        *,
        audience: str,
        service_account_email: str,
        certs_url: str = GOOGLE_CERTS_URL,
        certs_provider: Callable[[], Mapping[str, str]] | None = None,
        issuers: tuple[str, ...] = GOOGLE_ISSUERS,
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._audience = audience
        self._email = service_account_email
        self._certs = certs_provider or CachedCerts(check_certs_url(certs_url))
        self._issuers = frozenset(issuers)
        self._skew_seconds = clock_skew_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return f"OidcVerifier(audience={self._audience!r}, service_account={self._email!r})"

    def verify(self, request_body: bytes, headers: Mapping[str, str]) -> None:
        """Accept the delivery only with a valid Google ID token for this worker.

        The checks run in order (signature first), so a forged token is reported as
        forged whatever its claims say. Messages name the failed check, never the token.

        Raises:
            Unauthenticated: there is no ``Authorization: Bearer`` header.
            Forbidden: the token is malformed, unsigned by Google, stale, or for
                another audience, issuer or identity.
        """
        token = _bearer_token(headers)
        header, claims, signed_section, signature = _parse(token)
        self._check_signature(header, signed_section, signature)
        self._check_times(claims)
        self._check_claims(claims)

    def _check_signature(
        self, header: Mapping[str, Any], signed_section: bytes, signature: bytes
    ) -> None:
        if header.get("alg") != "RS256":
            raise Forbidden("token is not signed with RS256, the algorithm Google uses")
        certs = self._certs()
        key_id = header.get("kid")
        if isinstance(key_id, str) and key_id in certs:
            candidates = [certs[key_id]]
        elif key_id is None:
            candidates = list(certs.values())
        else:
            raise Forbidden("token is signed with a key that is not among Google's certificates")
        for cert in candidates:
            if _rsa_verifier(cert).verify(signed_section, signature):
                return
        raise Forbidden("token signature does not verify against Google's certificates")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        issued_at, expires_at = _number_claim(claims, "iat"), _number_claim(claims, "exp")
        now = self._clock()
        if expires_at + self._skew_seconds < now:
            raise Forbidden("token expired")
        if issued_at - self._skew_seconds > now:
            raise Forbidden("token is issued in the future; check the worker's clock")

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") not in self._issuers:
            raise Forbidden("token issuer is not Google")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self._audience not in audiences:
            raise Forbidden(
                "token audience is not this worker's (RELAY_TASKS_AUDIENCE or RELAY_WORKER_URL)"
            )
        email = claims.get("email")
        if not isinstance(email, str) or email.lower() != self._email.lower():
            raise Forbidden(
                "token identity is not the configured service account (RELAY_TASKS_SERVICE_ACCOUNT)"
            )
        if claims.get("email_verified") not in (True, "true"):
            raise Forbidden("token email is not verified")


def check_certs_url(url: str) -> str:
    """Return ``url`` if certificates may be fetched from it, else raise.

    Another URL than Google's only changes *whose signatures* count (a test key, a
    Google-compatible token service); issuer, audience, service account and expiry are
    checked the same. It must be https, so the keys cannot be swapped in transit; plain
    http is allowed only on a loopback host (the emulator stack of the tests), which
    nothing outside the machine can serve. Any other URL than Google's is logged.

    Raises:
        ConfigurationError: the URL is not https and not http on 127.0.0.1/localhost/::1.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    is_loopback = parts.hostname in _LOOPBACK_HOSTS
    if not (parts.scheme == "https" and parts.hostname) and not (
        parts.scheme == "http" and is_loopback
    ):
        raise ConfigurationError(
            f"RELAY_OIDC_CERTS_URL={url!r}: signing certificates must come over https "
            "(plain http only from a loopback host); leave it unset for Google's"
        )
    if url != GOOGLE_CERTS_URL:
        log.warning("OIDC tokens are verified against certificates from %s, not Google's", url)
    return url


class CachedCerts:
    """Google's signing certificates, fetched on demand and kept for their ``max-age``.

    Args:
        url: The JSON document of ``{key id: PEM certificate}``.
        timeout_seconds: Per fetch.
        clock: Monotonic seconds, for expiry.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] = {}
        self._expires_at = float("-inf")

    def __call__(self) -> Mapping[str, str]:
        """The current certificates, refetched once the cached copy expired.

        Raises:
            InfrastructureError: the certificates cannot be fetched and none are cached;
                the delivery is deferred (503, Cloud Tasks retries it), never let through.
        """
        with self._lock:
            if self._clock() >= self._expires_at:
                self._refresh_locked()
            return self._certs

    def _refresh_locked(self) -> None:
        import urllib.request  # only on a certificate fetch: about 20 ms of imports

        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout_seconds) as response:
                body = response.read()
                cache_control = response.headers.get("Cache-Control", "")
            certs = json.loads(body)
        except (OSError, ValueError) as exc:
            if self._certs:  # keep serving the last good set for a short while
                self._expires_at = self._clock() + 10.0
                return
            raise InfrastructureError(
                f"cannot fetch signing certificates from {self._url}: {exc}"
            ) from exc
        if not isinstance(certs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in certs.items()
        ):
            raise InfrastructureError(f"signing certificates at {self._url} are not a key-id map")
        match = _MAX_AGE.search(cache_control)
        max_age = float(match.group(1)) if match else DEFAULT_CERTS_MAX_AGE_SECONDS
        self._certs = certs
        self._expires_at = self._clock() + max_age


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
    """Header, claims, signed bytes and signature of a compact JWT (nothing verified)."""
    segments = token.split(".")
    if len(token) > MAX_TOKEN_BYTES or len(segments) != 3:
        raise Forbidden("bearer token is not a JWT")
    try:
        header = json.loads(_b64decode(segments[0]))
        claims = json.loads(_b64decode(segments[1]))
        signature = _b64decode(segments[2])
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError included
        raise Forbidden("bearer token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Forbidden("bearer token is not a JWT")
    return header, claims, f"{segments[0]}.{segments[1]}".encode(), signature


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _number_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Forbidden(f"token lacks a numeric {name} claim")
    return float(value)
