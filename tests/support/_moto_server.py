"""moto_server with its requests serialised; run as a script (see tests/support/aws.py).

moto's in-memory backends check a condition and then write without a lock, so two
concurrent requests can both pass the same condition: on a plain ``moto_server``, 20
threads racing a conditional ``TransactWriteItems`` or ``UpdateItem`` on one item
produced two winners in about 1 of 30 trials, and SQS FIFO de-duplication and receives
race the same way. DynamoDB, SQS and S3 are atomic per item, so the tests would be
testing moto's race rather than our conditions. Handling one request at a time restores
the atomicity. SQS long polls (``WaitTimeSeconds`` above zero, or left to the queue's
default) bypass the lock so that they cannot stall every other request.

Usage: ``python _moto_server.py -H 127.0.0.1 -p PORT`` (the ``moto_server`` options).
"""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import moto.server

_lock = threading.Lock()

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class SerialisedApp:
    """A WSGI wrapper running one request at a time (except SQS long polls)."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if _is_long_poll(environ):
            return list(self._app(environ, start_response))
        with _lock:
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


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


def main() -> None:
    """Start moto's own server entry point with the serialising wrapper around its app."""
    run_simple = moto.server.run_simple

    def serialised_run_simple(host: str, port: int, app: WsgiApp, **options: Any) -> None:
        run_simple(host, port, SerialisedApp(app), **options)

    moto.server.run_simple = serialised_run_simple  # type: ignore[assignment]
    moto.server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
