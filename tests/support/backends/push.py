"""What the push-queue contract suite needs from a backend, and the HTTP worker it pushes to.

A push queue (Cloud Tasks) delivers by POSTing to a worker URL, so its contract is
checked from the receiving end: ``PushReceiver`` is a stdlib HTTP server on a free
loopback port that records every delivery and answers 200, or the status the test asks
for. A ``@push_queue_backend`` fixture takes ``push_receiver`` and returns a
``PushQueueUnderTest``: the queue pointed at the receiver, queues that are broken in the
two ways the contract names, and what the backend can be expected to do.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from core.ports.task_queue import TaskQueue


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got."""

    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass
class PushReceiver:
    """A worker stand-in: records deliveries, answers 200 (or queued failure statuses)."""

    server: http.server.ThreadingHTTPServer
    deliveries: list[Delivery] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Where the queue should POST."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/relay/worker"

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer ``status`` to the next ``count`` deliveries (a worker asking for a retry)."""
        with self.lock:
            self.failures.extend([status] * count)

    def received(self) -> list[Delivery]:
        """The deliveries so far, in arrival order."""
        with self.lock:
            return list(self.deliveries)

    def wait_for(self, count: int, *, timeout_seconds: float) -> list[Delivery]:
        """Wait until ``count`` deliveries arrived (or the timeout); returns what arrived."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return self.received()

    def _record(self, delivery: Delivery) -> int:
        with self.lock:
            self.deliveries.append(delivery)
            return self.failures.pop(0) if self.failures else 200


def _handler(receiver: Callable[[], PushReceiver]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = receiver()._record(
                Delivery(time.time(), self.path, dict(self.headers.items()), body)
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reports what it needs

    return Handler


@pytest.fixture
def push_receiver() -> Iterator[PushReceiver]:
    """A recording HTTP worker on 127.0.0.1, stopped after the test."""
    holder: list[PushReceiver] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(lambda: holder[0]))
    server.daemon_threads = True
    holder.append(PushReceiver(server))
    thread = threading.Thread(target=server.serve_forever, name="push-receiver", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass(frozen=True)
class PushQueueUnderTest:
    """A push queue wired to ``receiver``, and what the suite may expect of its backend.

    Attributes:
        queue: The adapter, delivering to ``receiver.url``.
        receiver: The recording worker.
        missing_queue: The same adapter on a queue that does not exist.
        unreachable_queue: The same adapter on an address nothing listens on, with a
            short timeout.
        task_name_header: The delivery header naming the task (the identity a
            duplicate enqueue reuses).
        retry_count_header: The delivery header counting previous attempts.
        refuses_duplicate_names: True when the service itself refuses a second task of
            the same name (real Cloud Tasks); False for an emulator that queues it again.
        delivery_latency_seconds: How long a due task may take to arrive.
    """

    queue: TaskQueue
    receiver: PushReceiver
    missing_queue: TaskQueue
    unreachable_queue: TaskQueue
    task_name_header: str
    retry_count_header: str
    refuses_duplicate_names: bool
    delivery_latency_seconds: float = 3.0
