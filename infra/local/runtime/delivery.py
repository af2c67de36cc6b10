"""How the local dispatcher reaches a worker: the delivery transports and their outcomes.

A delivery is one attempt to have a worker process one message; its outcome tells the
dispatcher (``infra/local/runtime/dispatcher.py``) what to do with the message next. Two
transports sit behind one small interface: ``HttpDelivery`` POSTs signed bodies to worker
processes (what Cloud Tasks does) and classifies their HTTP answers by the
``POST /v1/steps`` contract; ``InProcessDelivery`` calls the engine on a thread pool (for
speed and for benchmarks)::

    deliver ──> done ───────────> ack                       (2xx)
           ├──> retry later ────> release(delay asked for)  (503/429 with a delay)
           ├──> failed ─────────> release(backoff by count) (5xx, transport, 401/403)
           └──> rejected ───────> ack + error log (poison)  (other 4xx)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp

from core.domain.records import Message
from core.engine.saga_runner import HandleResult
from core.errors import InfrastructureError
from core.signing import SIGNATURE_HEADER, sign

log = logging.getLogger("relay.dispatcher")

DEFAULT_DISPATCH_DEADLINE_SECONDS: Final = 600.0
"""How long one HTTP delivery may take: Cloud Tasks' default dispatch deadline (10 min)."""

_BACKOFF_INITIAL_SECONDS: Final = 0.1
_BACKOFF_MAX_SECONDS: Final = 10.0


class OutcomeKind(StrEnum):
    """What the dispatcher does with a message after one delivery."""

    DONE = "done"
    """The worker finished with the message: acknowledge it."""
    RETRY_LATER = "retry_later"
    """The worker asked for redelivery after a delay (a live lease, a retry not yet due)."""
    FAILED = "failed"
    """Transport error, 5xx or an auth failure: redeliver with exponential backoff."""
    REJECTED = "rejected"
    """The worker can never process it (malformed): acknowledge it and log an error."""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """The result of one delivery attempt, as the dispatcher needs it."""

    kind: OutcomeKind
    detail: str
    retry_after_seconds: float = 0.0


class DeliveryTransport(Protocol):
    """How a message reaches a worker; one delivery in, one outcome out.

    ``deliver`` must not raise for worker-side problems: it turns them into outcomes
    (an exception that escapes is treated as ``FAILED``).
    """

    @property
    def is_available(self) -> bool:
        """False while no worker can take deliveries (the dispatcher stops leasing)."""
        ...

    async def deliver(self, message: Message) -> DeliveryOutcome:
        """Deliver ``message`` once and classify what happened."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...

    def describe(self) -> str:
        """Where deliveries go, for startup logs."""
        ...


class MessageHandler(Protocol):
    """What ``InProcessDelivery`` calls: ``core.engine.engine.Engine`` satisfies it."""

    def handle(self, message: Message) -> HandleResult:
        """Process one delivery of ``message``."""
        ...


class InProcessDelivery:
    """Delivers by calling the engine directly on a thread pool, with no HTTP in between.

    Args:
        engine: Handles the messages (usually ``core.engine.engine.Engine``).
        concurrency: Threads in the pool; match the dispatcher's ``concurrency`` so every
            leased message starts at once instead of waiting for a thread, its lease
            running down.
    """

    def __init__(self, engine: MessageHandler, *, concurrency: int = 32) -> None:
        self._engine = engine
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="relay-deliver"
        )

    @property
    def is_available(self) -> bool:
        """Always True: the engine lives in this process."""
        return True

    async def deliver(self, message: Message) -> DeliveryOutcome:
        """Run ``engine.handle(message)`` on the pool and map its result to an outcome."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, self._engine.handle, message)
        except InfrastructureError as exc:
            # The store was locked or failing: what a worker answers with a 503.
            return DeliveryOutcome(OutcomeKind.FAILED, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            # A bug in the engine or a saga: Cloud Tasks would see a 500 and retry.
            log.exception("engine raised while handling %s", message.message_id)
            return DeliveryOutcome(OutcomeKind.FAILED, f"{type(exc).__name__}: {exc}")
        if result.is_done:
            return DeliveryOutcome(OutcomeKind.DONE, result.detail)
        return DeliveryOutcome(OutcomeKind.RETRY_LATER, result.detail, result.retry_after_seconds)

    async def aclose(self) -> None:
        """Wait for running handlers and stop the pool (off the loop: it blocks)."""
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def describe(self) -> str:
        """Deliveries stay in this process."""
        return "in-process"


class HttpDelivery:
    """POSTs signed message bodies to worker URLs, round-robin over a pooled client.

    A URL that refused a connection is skipped for ``cooldown_seconds`` while another is
    up, so a crashed worker costs one failed delivery, not one in every N. ``set_urls``
    lets a supervisor route around workers that are restarting.

    Args:
        urls: Full endpoint URLs of the workers (``http://127.0.0.1:P/v1/steps``).
        key: The HMAC key the workers verify ``X-Relay-Signature`` with.
        timeout_seconds: Longest one delivery may take (the dispatch deadline); keep
            the dispatcher's lease longer than this.
        max_connections: Size of the connection pool shared by all URLs.
        cooldown_seconds: How long a URL that refused a connection is avoided.
    """

    def __init__(
        self,
        urls: Sequence[str],
        key: bytes,
        *,
        timeout_seconds: float = DEFAULT_DISPATCH_DEADLINE_SECONDS,
        max_connections: int = 64,
        cooldown_seconds: float = 1.0,
    ) -> None:
        self._urls: list[str] = list(urls)
        self._key = key
        self._cooldown_seconds = cooldown_seconds
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()
        self._timeout_seconds = timeout_seconds
        self._max_connections = max_connections
        # Created on first use, inside the running event loop (aiohttp requires it).
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx here: at 32 deliveries in flight httpx's async pool
        # spent ~75% of the dispatcher's CPU on per-request pool bookkeeping
        # (bench/transitions.py over HTTP), aiohttp's connector a small fraction of it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self._timeout_seconds, connect=min(self._timeout_seconds, 5.0)
                ),
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # Deliveries go to local workers only; a proxy from the environment
                # would route 127.0.0.1 traffic through it.
                trust_env=False,
            )
        return self._session

    @property
    def urls(self) -> list[str]:
        """The URLs deliveries currently go to."""
        return list(self._urls)

    @property
    def is_available(self) -> bool:
        """True when at least one worker URL is routed."""
        return bool(self._urls)

    def set_urls(self, urls: Sequence[str]) -> None:
        """Route deliveries to ``urls`` from now on (a worker restarted or went away)."""
        self._urls = list(urls)
        self._down_until = {u: t for u, t in self._down_until.items() if u in self._urls}

    def describe(self) -> str:
        """The worker URLs."""
        return ", ".join(self._urls) or "no workers"

    async def deliver(self, message: Message) -> DeliveryOutcome:
        """POST ``message`` to the next worker and classify the response."""
        url = self._next_url()
        if url is None:
            return DeliveryOutcome(OutcomeKind.FAILED, "no worker is available")
        body = json.dumps(message.to_json(), separators=(",", ":")).encode()
        # Signed afresh for every attempt: a worker refuses a signature it has seen.
        signature = sign(method="POST", path=_request_target(url), body=body, key=self._key)
        headers = {"content-type": "application/json", SIGNATURE_HEADER: signature}
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                answer = WorkerAnswer(
                    status=response.status,
                    headers={k.lower(): v for k, v in response.headers.items()},
                    text=await response.text(errors="replace"),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                self._down_until[url] = time.monotonic() + self._cooldown_seconds
            return DeliveryOutcome(OutcomeKind.FAILED, f"{url}: {type(exc).__name__}: {exc}")
        return classify_response(answer, url=url, message_id=message.message_id)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _next_url(self) -> str | None:
        urls = self._urls
        if not urls:
            return None
        now = time.monotonic()
        start = next(self._turn)
        for offset in range(len(urls)):
            url = urls[(start + offset) % len(urls)]
            if self._down_until.get(url, 0.0) <= now:
                return url
        # Every worker refused recently: try one anyway; the backoff paces the retries.
        return urls[start % len(urls)]


def _request_target(url: str) -> str:
    """The path and query of ``url``, as the worker sees them (what the signature covers)."""
    parts = urlsplit(url)
    return f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"


@dataclass(frozen=True, slots=True)
class WorkerAnswer:
    """A worker's HTTP answer, read in full (header names lower-cased)."""

    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.text)


def classify_response(response: WorkerAnswer, *, url: str, message_id: str) -> DeliveryOutcome:
    """Map a worker's HTTP answer to an outcome (the ``POST /v1/steps`` contract).

    200s are done; 503 or 429 with a delay is "retry later"; 401/403 mean the signing
    keys disagree, which a restart with the right key fixes, so they are retried (and
    logged as errors); other 4xx can never succeed and are dropped; the rest are retried.
    """
    status = response.status
    if 200 <= status < 300:
        return DeliveryOutcome(OutcomeKind.DONE, f"HTTP {status}")
    detail = f"{url}: HTTP {status} {response.text[:200]}".rstrip()
    if status in (429, 503):
        delay = _retry_after_seconds(response)
        if delay is not None:
            return DeliveryOutcome(OutcomeKind.RETRY_LATER, detail, delay)
        return DeliveryOutcome(OutcomeKind.FAILED, detail)
    if status in (401, 403):
        log.error(
            "worker refused delivery of %s as unauthenticated (%s): check that the "
            "dispatcher and the workers share RELAY_SIGNING_KEY / <data dir>/signing.key",
            message_id,
            detail,
        )
        return DeliveryOutcome(OutcomeKind.FAILED, detail)
    if 400 <= status < 500 and status != 408:
        return DeliveryOutcome(OutcomeKind.REJECTED, detail)
    return DeliveryOutcome(OutcomeKind.FAILED, detail)


def _retry_after_seconds(response: WorkerAnswer) -> float | None:
    """The delay a worker asked for: JSON ``retry_after_seconds``, else ``Retry-After``."""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            value = body.get("retry_after_seconds")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return _finite_delay(float(value))
    header = response.headers.get("retry-after")
    if header is None:
        return None
    with contextlib.suppress(ValueError):
        return _finite_delay(float(header))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(header)
        return _finite_delay(when.timestamp() - time.time())
    return None


def _finite_delay(seconds: float) -> float | None:
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def backoff_seconds(delivery_count: int, rng: random.Random) -> float:
    """Delay before redelivering a failed delivery: doubling from 0.1 s, capped at 10 s.

    "Equal jitter" (half fixed, half random) keeps a burst of failures, such as every
    message bound for a crashed worker, from coming back in lockstep.
    """
    exponent = min(max(delivery_count, 1) - 1, 30)
    base = min(_BACKOFF_MAX_SECONDS, _BACKOFF_INITIAL_SECONDS * 2.0**exponent)
    return base / 2 + rng.random() * base / 2
