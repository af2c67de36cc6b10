"""Google's token-signing certificates for the OIDC verifier: fetched, capped in age, refetched.

``CachedCerts`` keeps the published ``{key id: PEM certificate}`` document for its
``Cache-Control: max-age``, capped (issue 10, finding 8: an uncapped max-age would pin a
revoked key), fetches it without following redirects (a redirect could swap the keys for
someone else's), and refetches it when a token names a key id it does not know (Google
rotated its keys) at most once per ``refetch_interval_seconds``, so junk key ids cannot
make the worker hammer the endpoint.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from core.errors import ConfigurationError, InfrastructureError

log = logging.getLogger("relay.auth")

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
"""Google's OAuth2 signing certificates as ``{key id: PEM certificate}``."""
DEFAULT_CERTS_MAX_AGE_SECONDS: Final = 300.0
"""How long fetched certificates are kept when the response carries no ``max-age``."""
MAX_CERTS_MAX_AGE_SECONDS: Final = 3600.0
"""The longest a fetched set is kept, whatever its ``max-age`` says."""
DEFAULT_REFETCH_INTERVAL_SECONDS: Final = 30.0
"""At most one refetch per this many seconds for tokens naming an unknown key id."""
MAX_CERTS_BYTES: Final = 256 * 1024
"""Google's document is about 4 KiB; more is not it."""
_STALE_GRACE_SECONDS: Final = 10.0
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_MAX_AGE: Final = re.compile(r"(?:^|[,\s])max-age=([0-9]{1,10})(?:$|[,\s])", re.ASCII)


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
    """Google's signing certificates, fetched on demand and kept for a capped ``max-age``.

    Args:
        url: The JSON document of ``{key id: PEM certificate}``.
        timeout_seconds: Per fetch.
        max_age_cap_seconds: The longest a fetched set is kept.
        refetch_interval_seconds: Least time between refetches for unknown key ids.
        clock: Monotonic seconds, for expiry.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 5.0,
        max_age_cap_seconds: float = MAX_CERTS_MAX_AGE_SECONDS,
        refetch_interval_seconds: float = DEFAULT_REFETCH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._timeout_seconds = timeout_seconds
        self._max_age_cap_seconds = max_age_cap_seconds
        self._refetch_interval_seconds = refetch_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._certs: Mapping[str, str] = {}
        self._expires_at = float("-inf")
        self._fetched_at = float("-inf")

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

    def refetch_for_unknown_key(self, key_id: str) -> Mapping[str, str]:
        """The certificates, refetched first if ``key_id`` is unknown and none was recent.

        Raises:
            InfrastructureError: as for a call, when nothing is cached.
        """
        with self._lock:
            is_due = self._clock() - self._fetched_at >= self._refetch_interval_seconds
            if key_id not in self._certs and is_due:
                log.info("OIDC token names unknown key id; refetching certificates")
                self._refresh_locked()
            return self._certs

    def _refresh_locked(self) -> None:
        self._fetched_at = self._clock()
        try:
            body, cache_control = _fetch_without_redirects(self._url, self._timeout_seconds)
            certs = json.loads(body)
        except (OSError, ValueError) as exc:
            if self._certs:  # keep serving the last good set for a short while
                log.warning("cannot refresh signing certificates from %s: %s", self._url, exc)
                self._expires_at = self._clock() + _STALE_GRACE_SECONDS
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
        self._expires_at = self._clock() + min(max_age, self._max_age_cap_seconds)


def _fetch_without_redirects(url: str, timeout_seconds: float) -> tuple[bytes, str]:
    """GET ``url`` and return (body, Cache-Control); a redirect is an ``OSError``."""
    import urllib.error  # only on a certificate fetch: about 20 ms of imports
    import urllib.request

    class RefuseRedirects(urllib.request.HTTPRedirectHandler):
        """Certificates come from the configured URL only, never from where it points."""

        def redirect_request(  # noqa: PLR0917 (urllib's signature, overridden)
            self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> Any:
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to {newurl!r} refused", headers, fp
            )

    opener = urllib.request.build_opener(RefuseRedirects())
    with opener.open(url, timeout=timeout_seconds) as response:
        body: bytes = response.read(MAX_CERTS_BYTES + 1)
        cache_control: str = response.headers.get("Cache-Control", "")
    if len(body) > MAX_CERTS_BYTES:
        raise ValueError(f"certificate document exceeds {MAX_CERTS_BYTES} bytes")
    return body, cache_control
