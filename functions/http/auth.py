"""Who may deliver step messages, events and scheduled invocations to a worker.

Deliveries change run state, so the worker authenticates them before it parses a byte:
HMAC signatures between Relay's own processes locally (scheme v2, bound to method, path,
time and body, each accepted once: ``core/signing.py``, ADR 6); OIDC tokens (Cloud Tasks,
Pub/Sub push, Cloud Scheduler, operators) on GCP (``functions/http/oidc.py``); IAM on AWS,
where deliveries never come over HTTP. ``functions/http/verifiers.py`` picks the verifier
for a backend. A verifier answers *who* signed (the principal) or raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from starlette.datastructures import Headers

from core import signing
from core.errors import ConfigurationError


class Unauthenticated(Exception):
    """Raised when a delivery carries no credentials at all (HTTP 401).

    ``challenge`` is the ``WWW-Authenticate`` value telling the caller what to present.
    """

    def __init__(self, message: str, *, challenge: str) -> None:
        super().__init__(message)
        self.challenge = challenge


class Forbidden(Exception):
    """Raised when a delivery's credentials are malformed, stale or wrong (HTTP 403)."""


class DeliveryVerifier(Protocol):
    """Decides whether a delivery may touch run state, and who sent it.

    ``verify`` must not change run state and must not echo secrets (expected digests,
    keys, tokens) in the messages of the errors it raises: they reach logs and response
    bodies. It may remember what it accepted (a nonce cache refusing replays).
    """

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        """Return the principal when the request is authentic.

        Args:
            method: The HTTP method of the request.
            path: Its path with the query string (``/v1/runs/r-1/cancel?x=1``), as sent.
            body: Its exact body bytes.
            headers: Its headers (names compared case-insensitively).

        Returns:
            Who signed it, such as ``hmac:local`` or ``oidc:<email>``.

        Raises:
            Unauthenticated: no credentials were presented.
            Forbidden: credentials were presented and do not check out for this request.
        """
        ...


HMAC_PRINCIPAL: Final = "hmac:local"


class HmacVerifier:
    """Checks ``X-Relay-Signature`` (``core.signing``, scheme v2) with a shared key.

    Each signature passes once: its nonce is remembered for the signature window, so a
    captured request cannot be sent again.

    Args:
        key: The HMAC key the local signers use.
        clock: Epoch seconds; injectable so tests can present stale signatures.
        nonces: Where accepted nonces are remembered: in this process by default; give
            every process of a data dir the shared ``SQLiteNonceStore`` so a request
            replayed to another worker is refused too (``verifier_for`` does).
    """

    def __init__(
        self,
        key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        nonces: signing.NonceStore | None = None,
    ) -> None:
        if not key:
            raise ConfigurationError("the HMAC signing key is empty; set RELAY_SIGNING_KEY")
        self._key = key
        self._clock = clock
        self._nonces = nonces if nonces is not None else signing.MemoryNonceStore()

    def __repr__(self) -> str:
        # The key must never reach a log line through a repr.
        return f"HmacVerifier(scheme={signing.SCHEME}, nonces={type(self._nonces).__name__})"

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        """Accept the request only with a fresh, unused signature over exactly it.

        Raises:
            Unauthenticated: the signature header is absent.
            Forbidden: the header is malformed, stale, reused, or signed with another
                key or for another method, path or body.
        """
        header = header_value(headers, signing.SIGNATURE_HEADER)
        if not header:
            raise Unauthenticated(
                f"missing {signing.SIGNATURE_HEADER} header",
                challenge=f'Relay-HMAC header="{signing.SIGNATURE_HEADER}"',
            )
        now = self._clock()
        try:
            signature = signing.verify(
                header, method=method, path=path, body=body, key=self._key, now=now
            )
            expires_at = signing.nonce_expiry(signature)
            self._nonces.remember(signature.nonce, expires_at=expires_at, now=now)
        except signing.SignatureError as exc:
            raise Forbidden(str(exc)) from None
        return HMAC_PRINCIPAL


class LazyVerifier:
    """A verifier built on first use, so a function's import reads no key file.

    Args:
        factory: Builds the real verifier (typically ``functions.http.verifiers.verifier_for``).
    """

    def __init__(self, factory: Callable[[], DeliveryVerifier]) -> None:
        self._factory = factory
        self._verifier: DeliveryVerifier | None = None
        self._lock = threading.Lock()

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        """Build the real verifier once, then delegate to it."""
        with self._lock:
            if self._verifier is None:
                self._verifier = self._factory()
            verifier = self._verifier
        return verifier.verify(method=method, path=path, body=body, headers=headers)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` compared case-insensitively (HTTP header names are).

    Raises:
        Forbidden: the header is sent more than once (which one counts would be a guess).
    """
    if isinstance(headers, Headers):
        values = headers.getlist(name)
        if len(values) > 1:
            raise Forbidden(f"{name} header is repeated; send it once")
        return values[0] if values else None
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)
