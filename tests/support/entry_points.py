"""A small saga and helpers for the entry-point tests (independent of the bundle's sagas).

The saga is importable by reference (``tests.support.entry_points:greet``) so tests can
also register it through ``RELAY_SAGA_MODULES``, the way a deployment would.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field
from starlette.exceptions import StarletteDeprecationWarning

from core import Saga, StepContext
from core.signing import SIGNATURE_HEADER, sign
from infra.local.sqlite_queue import SQLiteTaskQueue
from infra.local.sqlite_store import SQLiteStateStore

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its TestClient; httpx, which the project
    # depends on, still works and only triggers this import-time deprecation warning.
    warnings.filterwarnings(
        "ignore",
        message="Using `httpx` with `starlette.testclient`",
        category=StarletteDeprecationWarning,
    )
    from starlette.testclient import TestClient

__all__ = [
    "SIGNING_KEY",
    "STEP_CALLS",
    "TestClient",
    "assert_nothing_written",
    "greet",
    "json_body",
    "signed",
]

SIGNING_KEY = b"test-signing-key-0123456789abcdef"

STEP_CALLS: Counter[str] = Counter()
"""How often each step function of ``greet`` ran (reset by an autouse fixture)."""


class Greeting(BaseModel):
    """Input of ``greet``."""

    name: str = Field(min_length=1)
    times: int = Field(default=1, ge=1, le=10)


greet = Saga("greet", input_model=Greeting, description="Compose a greeting, then send it")
greet.on_event("people.*.joined")
greet.schedule("nightly-greeting", "0 3 * * *", input={"name": "night shift"})


# Declared in an order that is not alphabetical, so views must follow the definition.
@greet.step
def write_text(ctx: StepContext) -> dict[str, Any]:
    STEP_CALLS["write_text"] += 1
    return {"text": " ".join([f"hello {ctx.input.name}"] * ctx.input.times)}


@greet.step
def deliver(ctx: StepContext) -> dict[str, Any]:
    STEP_CALLS["deliver"] += 1
    return {"sent": ctx.outputs["write_text"]["text"]}


@deliver.compensation
def unsend(ctx: StepContext) -> None:
    STEP_CALLS["unsend"] += 1


def json_body(payload: Any) -> bytes:
    """Compact JSON bytes, as the dispatcher sends them (the signature covers exact bytes)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def signed(
    body: bytes,
    *,
    path: str,
    method: str = "POST",
    key: bytes = SIGNING_KEY,
    now: float | None = None,
) -> dict[str, str]:
    """Headers carrying a signature of the request (by default a valid, fresh one).

    Each call signs afresh (a new nonce): workers refuse a signature they have seen.
    """
    signature = sign(method=method, path=path, body=body, key=key, now=now)
    return {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}


def assert_nothing_written(store: SQLiteStateStore, queue: SQLiteTaskQueue) -> None:
    """No run exists and no message is queued."""
    assert store.list_runs() == []
    assert queue.pending_count() == 0
