"""moto_server with its requests serialised; run as a script (see tests/support/aws.py).

moto's in-memory backends check a condition and then write without a lock, so two
concurrent requests can both pass the same condition: on a plain ``moto_server``, 20
threads racing a conditional ``TransactWriteItems`` or ``UpdateItem`` on one item
produced two winners in about 1 of 30 trials, and SQS FIFO de-duplication and receives
race the same way. DynamoDB, SQS and S3 are atomic per item, so the tests would be
testing moto's race rather than our conditions. Handling one request at a time restores
the atomicity. SQS long polls (``WaitTimeSeconds`` above zero, or left to the queue's
default) bypass the lock so that they cannot stall every other request.

One emulator cost is removed, without changing what moto answers: its ReceiveMessage
checks each message it hands out against the queue's retention period by computing *all*
the queue's attributes, among them the approximate counts, each a pass over every
message in the queue. A receive of ten cost eleven passes over the queue (1.4 s with
1,000 messages queued, measured in moto 4.2 to 5.2.5), so the deeper the queue, the
slower every receive: a slow consumer slowed itself down further. The patched check reads
the retention period directly (``RELAY_MOTO_UNPATCHED=1`` keeps moto's own, to compare).

Every request is counted by operation (``X-Amz-Target``, else method and first path
segment) with the time spent handling it and waiting for the lock; ``GET
/relay-stats/`` answers those counters as JSON, so a test can say where moto's time
went (``tests/support/aws.py``: ``moto_stats``).

Usage: ``python _moto_server.py -H 127.0.0.1 -p PORT`` (the ``moto_server`` options).
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import moto.server

_lock = threading.Lock()
STATS_PATH = "/relay-stats/"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Stats:
    """Per-operation request counters (count, handling seconds, lock-wait seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, list[float]] = {}

    def add(self, op: str, handled_seconds: float, waited_seconds: float) -> None:
        with self._lock:
            entry = self._ops.setdefault(op, [0, 0.0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += handled_seconds
            entry[2] += waited_seconds
            entry[3] = max(entry[3], handled_seconds)

    def to_json(self) -> bytes:
        with self._lock:
            ops = {
                op: {
                    "count": int(count),
                    "seconds": round(handled, 3),
                    "lock_wait_seconds": round(waited, 3),
                    "max_seconds": round(longest, 4),
                }
                for op, (count, handled, waited, longest) in sorted(self._ops.items())
            }
        return json.dumps(ops).encode()


class SerialisedApp:
    """A WSGI wrapper running one request at a time (except SQS long polls)."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self.stats = _Stats()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == STATS_PATH:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [self.stats.to_json()]
        op = _operation(environ)
        if _is_long_poll(environ):
            began = time.perf_counter()
            try:
                return list(self._app(environ, start_response))
            finally:
                self.stats.add(op + " (long poll)", time.perf_counter() - began, 0.0)
        asked = time.perf_counter()
        with _lock:
            began = time.perf_counter()
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                self.stats.add(op, time.perf_counter() - began, began - asked)


def _operation(environ: dict[str, Any]) -> str:
    """The API operation of a request: ``X-Amz-Target`` (JSON protocols) or method + path."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target)
    segment = str(environ.get("PATH_INFO", "/")).strip("/").split("/", 1)[0]
    return f"{environ.get('REQUEST_METHOD', '?')} /{segment}"


def _is_long_poll(environ: dict[str, Any]) -> bool:
    """True for an SQS ReceiveMessage (JSON protocol) that may wait for messages."""
    if environ.get("HTTP_X_AMZ_TARGET") != "AmazonSQS.ReceiveMessage":
        return False
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        wait = json.loads(body or b"{}").get("WaitTimeSeconds")
    except ValueError:
        return True
    return wait is None or int(wait) > 0


def _patch_retention_check() -> None:
    """Make moto's per-message retention check read one attribute (see module docstring)."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    if not hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        return  # another moto: nothing to speed up, or already fixed

    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Any
    ) -> bool:
        queue: Any = self.get_queue(queue_name)
        retention_seconds = int(queue.message_retention_period)
        return bool(unix_time() < retention_seconds + message.sent_timestamp / 1000)

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


def main() -> None:
    """Start moto's own server entry point with the serialising wrapper around its app."""
    if os.environ.get("RELAY_MOTO_UNPATCHED") != "1":
        _patch_retention_check()
    run_simple = moto.server.run_simple

    def serialised_run_simple(host: str, port: int, app: WsgiApp, **options: Any) -> None:
        run_simple(host, port, SerialisedApp(app), **options)

    moto.server.run_simple = serialised_run_simple  # type: ignore[assignment]
    moto.server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
