"""Who may deliver step messages, events and scheduled invocations to a worker.

Deliveries change run state, so the worker authenticates them before it parses a byte:
HMAC signatures between Relay's own processes locally; OIDC tokens (Cloud Tasks, Pub/Sub
push, Cloud Scheduler) on GCP (``functions/http/oidc.py``); IAM on AWS, where deliveries
never come over HTTP. ``functions/http/verifiers.py`` picks the verifier for a backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

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
    """Decides whether a delivery may touch run state.

    ``verify`` must not change anything and must not echo secrets (expected digests,
    keys) in the messages of the errors it raises: they reach logs and response bodies.
    """

    def verify(self, request_body: bytes, headers: Mapping[str, str]) -> None:
        """Return when the delivery is authentic.

        Raises:
            Unauthenticated: no credentials were presented.
            Forbidden: credentials were presented and do not check out.
        """
        ...


class HmacVerifier:
    """Checks ``X-Relay-Signature`` (see ``core.signing``) with a shared key.

    Args:
        key: The HMAC key the local dispatcher signs with.
        tolerance_seconds: How old a signature may be before it counts as a replay.
        clock: Epoch seconds; injectable so tests can present stale signatures.
    """

    def __init__(
        self,
        key: bytes,
        *,
        tolerance_seconds: float = signing.DEFAULT_TOLERANCE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not key:
            raise ConfigurationError("the HMAC signing key is empty; set RELAY_SIGNING_KEY")
        self._key = key
        self._tolerance_seconds = tolerance_seconds
        self._clock = clock

    def __repr__(self) -> str:
        # The key must never reach a log line through a repr.
        return f"HmacVerifier(tolerance_seconds={self._tolerance_seconds:g})"

    def verify(self, request_body: bytes, headers: Mapping[str, str]) -> None:
        """Accept the delivery only with a fresh signature over exactly this body.

        Raises:
            Unauthenticated: the signature header is absent.
            Forbidden: the header is malformed, stale, or signed with another key.
        """
        header = header_value(headers, signing.SIGNATURE_HEADER)
        if not header:
            raise Unauthenticated(
                f"missing {signing.SIGNATURE_HEADER} header",
                challenge=f'Relay-HMAC header="{signing.SIGNATURE_HEADER}"',
            )
        try:
            signing.verify(
                request_body,
                header,
                key=self._key,
                now=self._clock(),
                tolerance_seconds=self._tolerance_seconds,
            )
        except signing.SignatureError as exc:
            raise Forbidden(str(exc)) from None


class LazyVerifier:
    """A verifier built on first use, so a function's import reads no key file.

    Args:
        factory: Builds the real verifier (typically ``functions.http.verifiers.verifier_for``).
    """

    def __init__(self, factory: Callable[[], DeliveryVerifier]) -> None:
        self._factory = factory
        self._verifier: DeliveryVerifier | None = None
        self._lock = threading.Lock()

    def verify(self, request_body: bytes, headers: Mapping[str, str]) -> None:
        """Build the real verifier once, then delegate to it."""
        with self._lock:
            if self._verifier is None:
                self._verifier = self._factory()
            verifier = self._verifier
        verifier.verify(request_body, headers)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` compared case-insensitively (HTTP header names are)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)
