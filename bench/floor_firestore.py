"""The GCP cold-start floor: a bare ``--asgi`` function that makes one Firestore write.

DESIGN.md's floor for the GCP worker: the same runtime (functions-framework ``--asgi``),
importing the same store SDK (``google.cloud.firestore``), with a client created on the
first request and one document written per request (to the emulator named by
``FIRESTORE_EMULATOR_HOST``). What Relay's worker costs on top of this is Relay's own.
"""

from __future__ import annotations

import os
import threading
import time

import functions_framework.aio
from google.cloud import firestore
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse

_lock = threading.Lock()
_client: firestore.Client | None = None


def _get_client() -> firestore.Client:
    """The client of this instance, created on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        return _client


def _write(body: bytes) -> None:
    document = _get_client().collection("relay_floor").document()
    document.set({"body": body, "at": time.time()})


@functions_framework.aio.http
async def floor(request: Request) -> PlainTextResponse:
    """Write one document and answer."""
    await run_in_threadpool(_write, await request.body())
    return PlainTextResponse("ok")
