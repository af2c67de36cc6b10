"""Bearer JWTs from a configured OIDC issuer (Identity Platform, Cognito, Auth0...).

``RELAY_API_AUTH=jwt`` (or ``api_key,jwt``) accepts ``Authorization: Bearer <JWT>`` signed
by a key of the issuer's JWKS (``RELAY_JWT_JWKS_URL``, or the ``jwks_uri`` of the issuer's
discovery document). Checked: signature (asymmetric algorithms only), ``iss``, ``aud``,
``exp`` (required, a finite number, at most ``MAX_LIFETIME_SECONDS`` ahead), ``nbf`` and
``iat`` (finite when present). The caller's grants are the ``RELAY_JWT_GRANTS_CLAIM``
claim in the grant syntax (a string, or a list of entries); none without it.

PyJWT is imported on the first token, not at cold start. The key set is cached for its
``max-age`` capped at ``MAX_JWKS_AGE_SECONDS``, fetched without following redirects and
at most ``MAX_JWKS_BYTES`` long; a token naming an unknown ``kid`` triggers one refetch at
most every ``REFETCH_INTERVAL_SECONDS`` (key rotation, without letting junk tokens drive
fetches).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from core.errors import ConfigurationError, InfrastructureError
from functions.http.auth import Forbidden
from functions.http.callers import Caller, CallerRequest, Grants, bearer_token, clip

if TYPE_CHECKING:
    from functions.settings import Settings

ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Asymmetric only: ``none`` and HMAC (a public key used as a shared secret) never verify."""
MAX_LIFETIME_SECONDS: Final = 24 * 3600.0
LEEWAY_SECONDS: Final = 30.0
MAX_JWKS_AGE_SECONDS: Final = 3600.0
DEFAULT_JWKS_AGE_SECONDS: Final = 300.0
REFETCH_INTERVAL_SECONDS: Final = 30.0
MAX_JWKS_BYTES: Final = 512 * 1024
MAX_KEYS: Final = 100
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_AGE: Final = re.compile(r"max-age=(\d{1,9})")


def check_fetch_url(url: str, *, variable: str) -> str:
    """``url`` if it is https, or http on a loopback host (tests).

    Raises:
        ConfigurationError: any other scheme or host, naming ``variable``.
    """
    parts = urllib.parse.urlsplit(url)
    is_loopback = parts.hostname in _LOOPBACK_HOSTS
    if (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and is_loopback):
        return url
    raise ConfigurationError(f"{variable}={url!r} must be an https URL (http only on loopback)")


def fetch_json(url: str, *, timeout_seconds: float) -> tuple[Any, str]:
    """GET ``url`` as JSON, with its ``Cache-Control``: no redirects, at most ``MAX_JWKS_BYTES``.

    Raises:
        InfrastructureError: unreachable, redirected, too large or not JSON.
    """
    import urllib.request  # only on a key fetch

    class _NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx then raises HTTPError below

    opener = urllib.request.build_opener(_NoRedirects())
    try:
        with opener.open(url, timeout=timeout_seconds) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
            cache_control = response.headers.get("Cache-Control", "")
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"over {MAX_JWKS_BYTES} bytes")
        document = json.loads(body)
    except (OSError, ValueError, RecursionError) as exc:
        raise InfrastructureError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc
    return document, cache_control


class JwksCache:
    """The issuer's signing keys by ``kid``, fetched on demand.

    Args:
        jwks_url: The JWKS document; None to read ``jwks_uri`` from the issuer's
            ``/.well-known/openid-configuration`` on first use.
        issuer: The issuer (for discovery).
        timeout_seconds: Per fetch.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None,
        issuer: str,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str | None, Any] = {}
        self._expires_at = float("-inf")
        self._fetched_at = float("-inf")

    def key_for(self, kid: str | None) -> Any | None:
        """The ``PyJWK`` for ``kid`` (the only key when the token names none); None if unknown.

        Raises:
            InfrastructureError: no key set could be fetched (the request is answered 503).
        """
        with self._lock:
            now = self._clock()
            if now >= self._expires_at:
                self._refresh_locked(now)
            key = self._lookup(kid)
            if key is None and now - self._fetched_at >= REFETCH_INTERVAL_SECONDS:
                self._refresh_locked(now)  # rotated keys: at most one refetch per interval
                key = self._lookup(kid)
            return key

    def _lookup(self, kid: str | None) -> Any | None:
        if kid is None:
            keys = list(self._keys.values())
            return keys[0] if len(keys) == 1 else None
        return self._keys.get(kid)

    def _url_locked(self) -> str:
        if self._jwks_url is None:
            discovery = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
            check_fetch_url(discovery, variable="RELAY_JWT_ISSUER")
            document, _ = fetch_json(discovery, timeout_seconds=self._timeout_seconds)
            uri = document.get("jwks_uri") if isinstance(document, dict) else None
            if not isinstance(uri, str):
                raise InfrastructureError(f"{discovery} names no jwks_uri")
            try:
                self._jwks_url = check_fetch_url(uri, variable="jwks_uri")
            except ConfigurationError as exc:
                raise InfrastructureError(str(exc)) from None
        return self._jwks_url

    def _refresh_locked(self, now: float) -> None:
        from jwt import PyJWK, PyJWKError

        self._fetched_at = now
        try:
            url = self._url_locked()
            document, cache_control = fetch_json(url, timeout_seconds=self._timeout_seconds)
        except InfrastructureError:
            if self._keys:  # keep the last good set for a short while
                self._expires_at = now + REFETCH_INTERVAL_SECONDS
                return
            raise
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise InfrastructureError(f"{url} is not a JWKS document (no keys list)")
        keys: dict[str | None, Any] = {}
        for entry in entries[:MAX_KEYS]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[entry.get("kid") if isinstance(entry.get("kid"), str) else None] = PyJWK(entry)
            except (PyJWKError, ValueError, TypeError):
                continue  # a key type this build cannot use: skip it, not the whole set
        match = _MAX_AGE.search(cache_control)
        max_age = float(match.group(1)) if match else DEFAULT_JWKS_AGE_SECONDS
        self._keys = keys
        self._expires_at = now + min(max_age, MAX_JWKS_AGE_SECONDS)


class JwtCheck:
    """Accepts bearer JWTs of one issuer and audience (see the module docstring).

    Args:
        issuer: The exact ``iss`` expected.
        audience: The ``aud`` expected (one of the token's audiences).
        keys: The issuer's signing keys.
        grants_claim: The claim holding the caller's grants.
        clock: Epoch seconds.
    """

    challenge = 'Bearer realm="relay"'

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: JwksCache,
        grants_claim: str = "relay_grants",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self._grants_claim = grants_claim
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtCheck:
        """The check configured by ``RELAY_JWT_*``.

        Raises:
            ConfigurationError: issuer or audience unset, or a URL that is not https.
        """
        missing = [
            name
            for name, value in (
                ("RELAY_JWT_ISSUER", settings.jwt_issuer),
                ("RELAY_JWT_AUDIENCE", settings.jwt_audience),
            )
            if not value
        ]
        if missing or not settings.jwt_issuer or not settings.jwt_audience:
            raise ConfigurationError(
                f"RELAY_API_AUTH=jwt needs {' and '.join(missing)} (the token issuer and the "
                "audience your tokens are minted for)"
            )
        jwks_url = settings.jwt_jwks_url
        if jwks_url:
            check_fetch_url(jwks_url, variable="RELAY_JWT_JWKS_URL")
        else:
            check_fetch_url(settings.jwt_issuer, variable="RELAY_JWT_ISSUER")
        return cls(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            keys=JwksCache(jwks_url=jwks_url, issuer=settings.jwt_issuer),
            grants_claim=settings.jwt_grants_claim,
        )

    def check(self, request: CallerRequest) -> Caller | None:
        """The token's caller; None without a bearer JWT.

        Raises:
            Forbidden: the token is malformed, signed by an unknown key, or its claims fail.
        """
        token = bearer_token(request.headers)
        if token is None or token.count(".") != 2 or token.startswith("rk_"):
            return None
        claims = self._verified_claims(token)
        subject = claims.get("sub")
        identity = f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt:unknown"
        return Caller(clip(identity), "jwt", self._grants(claims), request.source)

    def _verified_claims(self, token: str) -> Mapping[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise Forbidden("malformed JWT") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise Forbidden(f"JWT algorithm not accepted (use one of {sorted(ALGORITHMS)})")
        if kid is not None and not isinstance(kid, str):
            raise Forbidden("malformed JWT (kid)")
        key = self._keys.key_for(kid)
        if key is None:
            raise Forbidden("JWT signed by a key the issuer does not list")
        declared = getattr(key, "_jwk_data", {}).get("alg")
        if declared is not None and declared != algorithm:
            raise Forbidden("JWT algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Forbidden(f"JWT refused: {type(exc).__name__}") from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise Forbidden("JWT refused: malformed claims") from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is None and name != "exp":
                continue
            # The range check first: it is exact for any int (10**400 included) and
            # false for NaN; math.isfinite would overflow on a huge int.
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not -1e12 < value < 1e12
                or not math.isfinite(value)
            ):
                raise Forbidden(f"JWT claim {name} is not a finite time")
        if claims["exp"] > now + MAX_LIFETIME_SECONDS:
            raise Forbidden(f"JWT lives too long (exp over {MAX_LIFETIME_SECONDS:g}s ahead)")
        iat = claims.get("iat")
        if iat is not None and iat > now + LEEWAY_SECONDS:
            raise Forbidden("JWT issued in the future")

    def _grants(self, claims: Mapping[str, Any]) -> Grants:
        value = claims.get(self._grants_claim)
        if value is None:
            return Grants()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ";".join(value)
        if not isinstance(value, str):
            raise Forbidden(f"JWT claim {self._grants_claim} is not a grant string")
        try:
            return Grants.parse(value, what=f"JWT claim {self._grants_claim}")
        except ValueError as exc:
            raise Forbidden(str(exc)) from None
