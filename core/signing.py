"""HMAC signatures for deliveries between Relay's own processes (local mode).

The dispatcher signs each delivery and the worker verifies it before touching state, so
a process on the same machine cannot forge step messages. Header format (modelled on
Stripe's webhook signatures): ``X-Relay-Signature: t=<unix seconds>,v1=<hex sha256>``
over ``"<t>.<body>"``; a signature older than the tolerance is refused (replay).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Relay-Signature"
DEFAULT_TOLERANCE_SECONDS = 300.0


class SignatureError(Exception):
    """Raised when a delivery's signature is missing, malformed, stale or wrong."""


def sign(body: bytes, *, key: bytes, now: float | None = None) -> str:
    """The header value that authenticates ``body``."""
    timestamp = int(now if now is not None else time.time())
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    body: bytes,
    header: str | None,
    *,
    key: bytes,
    now: float | None = None,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check ``header`` against ``body``.

    Raises:
        SignatureError: saying what is wrong, never echoing the expected digest.
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    timestamp, digest = parts.get("t"), parts.get("v1")
    if timestamp is None or digest is None or not timestamp.isdigit():
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
    current = now if now is not None else time.time()
    if abs(current - int(timestamp)) > tolerance_seconds:
        raise SignatureError("signature timestamp outside the allowed window")
    expected = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise SignatureError("signature does not match")
