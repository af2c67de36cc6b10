"""The cold-start floor: a bare functions-framework function that makes one durable SQLite write.

It imports the same store library as the embedded worker and writes one fsync'd row per
request, so the difference to Relay's worker is Relay's own start-up cost.
"""

from __future__ import annotations

import os
import sqlite3

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import PlainTextResponse


@functions_framework.aio.http
async def floor(request: Request) -> PlainTextResponse:
    """Write one row, fsync'd, and answer."""
    conn = sqlite3.connect(
        os.path.join(os.environ["RELAY_DATA_DIR"], "floor.db"), isolation_level=None
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute("INSERT INTO hits (body) VALUES (?)", (await request.body(),))
    conn.close()
    return PlainTextResponse("ok")
