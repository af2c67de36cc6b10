r"""HMAC signatures for deliveries between Relay's own processes (local mode), scheme v2.

The dispatcher (and every other local signer) signs each request and the worker verifies it
before touching state, so a process on the same machine cannot forge step messages, and a
signature captured for one request is good for no other. Header format (modelled on
Stripe's webhook signatures, bound to the request as AWS SigV4 is)::

    X-Relay-Signature: t=<unix seconds>,n=<nonce>,v2=<hex sha256>

    MAC = HMAC-SHA256(key, "v2\n" METHOD "\n" path-with-query "\n" t "\n" n "\n" body)

A signature is accepted from 60 s in the past to 5 s in the future (issue 10, finding 3).
Scheme v1 (``t=..,v1=..`` over timestamp and body only) is refused: both ends ship
together. Parsing is strict ASCII; anything unexpected is a ``SignatureError``, never a
``ValueError``/``TypeError`` (a non-ASCII ``t=²`` passes ``str.isdigit`` and used to
reach ``int()``). Refusing a *second* use of a signature is the verifier's job
(``functions/http/auth.py``) with a ``NonceStore`` over the same window: in memory
(``MemoryNonceStore``) or shared by every local process (``infra/local/sqlite_nonces.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Protocol

SIGNATURE_HEADER: Final = "X-Relay-Signature"
SCHEME: Final = "v2"
MAX_PAST_SECONDS: Final = 60.0
"""How old a signature may be (delivery latency plus clock drift between local processes)."""
MAX_FUTURE_SECONDS: Final = 5.0
"""How far a signature's time may lie ahead of the verifier's clock."""
MAX_HEADER_LENGTH: Final = 256
"""A v2 header is about 110 characters; anything much longer is not one."""

_TIMESTAMP: Final = re.compile(r"[0-9]{1,12}")
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_KNOWN_PARTS: Final = frozenset({"t", "n", SCHEME})


class SignatureError(Exception):
    """Raised when a delivery's signature is missing, malformed, stale or wrong."""


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed ``X-Relay-Signature`` header (syntax checked, nothing verified)."""

    timestamp: int
    nonce: str
    digest: str


def sign(
    *,
    method: str,
    path: str,
    body: bytes,
    key: bytes,
    now: float | None = None,
    nonce: str | None = None,
) -> str:
    """The header value that authenticates one request.

    Args:
        method: The HTTP method (upper-cased before signing).
        path: The request path with its query string, as sent (``/v1/runs/r-1/cancel``).
        body: The exact body bytes.
        key: The shared HMAC key.
        now: Epoch seconds of the signature; the current time by default.
        nonce: 16 to 64 URL-safe characters; a fresh random one by default. Sign each
            request (each delivery attempt) afresh: verifiers refuse a nonce seen before.

    Returns:
        ``t=<unix>,n=<nonce>,v2=<hex>``.
    """
    timestamp = int(now if now is not None else time.time())
    nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 16 to 64 URL-safe base64 characters")
    digest = _mac(key, method=method, path=path, timestamp=timestamp, nonce=nonce, body=body)
    return f"t={timestamp},n={nonce},{SCHEME}={digest}"


def parse(header: str | None) -> Signature:
    """The parts of ``header``, checked character by character (ASCII only).

    Raises:
        SignatureError: the header is missing, too long, not ASCII, of another scheme,
            repeats or lacks a part, or a part is not of its exact form.
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    malformed = SignatureError(
        f"malformed {SIGNATURE_HEADER} header; expected t=<unix seconds>,n=<nonce>,v2=<hex>"
    )
    if len(header) > MAX_HEADER_LENGTH or not header.isascii():
        raise malformed
    parts: dict[str, str] = {}
    for item in header.split(","):
        name, eq, value = item.strip().partition("=")
        if name == "v1":
            raise SignatureError(
                f"{SIGNATURE_HEADER} scheme v1 is no longer accepted; sign with v2 "
                "(method, path, timestamp, nonce and body)"
            )
        if not eq or name not in _KNOWN_PARTS or name in parts:
            raise malformed
        parts[name] = value
    timestamp, nonce, digest = parts.get("t"), parts.get("n"), parts.get(SCHEME)
    if (
        timestamp is None
        or nonce is None
        or digest is None
        or not _TIMESTAMP.fullmatch(timestamp)
        or not _NONCE.fullmatch(nonce)
        or not _DIGEST.fullmatch(digest)
    ):
        raise malformed
    return Signature(timestamp=int(timestamp), nonce=nonce, digest=digest)


def verify(
    header: str | None,
    *,
    method: str,
    path: str,
    body: bytes,
    key: bytes,
    now: float | None = None,
) -> Signature:
    """Check ``header`` against the request; return the parsed signature.

    Whether the nonce was seen before is left to the caller (it needs state).

    Raises:
        SignatureError: saying what is wrong, never echoing the expected digest.
    """
    signature = parse(header)
    current = now if now is not None else time.time()
    if signature.timestamp < current - MAX_PAST_SECONDS:
        raise SignatureError("signature is too old (more than 60 s); sign each request afresh")
    if signature.timestamp > current + MAX_FUTURE_SECONDS:
        raise SignatureError("signature time lies in the future; check the signer's clock")
    expected = _mac(
        key,
        method=method,
        path=path,
        timestamp=signature.timestamp,
        nonce=signature.nonce,
        body=body,
    )
    # Both are ASCII hex strings of equal length here, so compare_digest cannot raise.
    if not hmac.compare_digest(expected, signature.digest):
        raise SignatureError("signature does not match this request")
    return signature


def _mac(key: bytes, *, method: str, path: str, timestamp: int, nonce: str, body: bytes) -> str:
    # Method and path are ASCII on the wire (non-ASCII paths arrive percent-encoded);
    # encoding as UTF-8 only keeps a hand-made call from raising.
    signed = f"{SCHEME}\n{method.upper()}\n{path}\n{timestamp}\n{nonce}\n".encode()
    return hmac.new(key, signed + body, hashlib.sha256).hexdigest()


DEFAULT_NONCE_CAPACITY: Final = 250_000
"""Nonces remembered at most: about 3,800 signed requests a second over the 65 s window."""


class NonceStore(Protocol):
    """Remembers the nonces of accepted signatures until they could no longer pass.

    Only signatures whose MAC verified are recorded, so a forger cannot fill it; a store
    that is full refuses rather than forgets (forgetting early would let a replay in).
    """

    def remember(self, nonce: str, *, expires_at: float, now: float) -> None:
        """Record ``nonce`` until ``expires_at`` (epoch seconds).

        Raises:
            SignatureError: the nonce was seen before (a replay), or the store is full.
        """
        ...


class MemoryNonceStore:
    """A thread-safe, bounded ``NonceStore`` in this process's memory.

    Args:
        capacity: Most nonces kept at once.
    """

    def __init__(self, *, capacity: int = DEFAULT_NONCE_CAPACITY) -> None:
        self._capacity = capacity
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, nonce: str, *, expires_at: float, now: float) -> None:
        """Record ``nonce`` until ``expires_at``.

        Raises:
            SignatureError: the nonce was seen before (a replay), or the store is full.
        """
        with self._lock:
            self._prune_locked(now)
            if nonce in self._expiry:
                raise replayed()
            if len(self._expiry) >= self._capacity:
                raise SignatureError("too many signed requests in the signature window; retry")
            self._expiry[nonce] = expires_at

    def _prune_locked(self, now: float) -> None:
        # Entries are appended roughly in time order; stopping at the first live one only
        # keeps a few expired entries a little longer, never drops a live one.
        while self._expiry:
            nonce, expires_at = next(iter(self._expiry.items()))
            if expires_at > now:
                return
            del self._expiry[nonce]


def replayed() -> SignatureError:
    """The error for a nonce seen before."""
    return SignatureError("signature was already used (replay); sign each request afresh")


def nonce_expiry(signature: Signature) -> float:
    """When a signature's nonce may be forgotten: once its time left the window."""
    return signature.timestamp + MAX_PAST_SECONDS + 1.0
