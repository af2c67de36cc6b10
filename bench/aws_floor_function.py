"""The AWS cold-start floor: a bare Mangum handler that imports boto3 and makes one DynamoDB write.

A raw ASGI app (no framework) behind Mangum: the first request builds a DynamoDB client
and puts one item into ``FLOOR_TABLE``, so the difference to Relay's handler is Relay's
own start-up cost (its imports, engine, Starlette app) on the same runtime and store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import boto3
from mangum import Mangum

Message = MutableMapping[str, Any]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Write one item, answer 200."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    client = boto3.session.Session().client("dynamodb")
    client.put_item(
        TableName=os.environ["FLOOR_TABLE"],
        Item={"pk": {"S": f"FLOOR#{uuid.uuid4()}"}, "sk": {"S": "x"}, "body": {"B": body or b"-"}},
    )
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


handler = Mangum(app, lifespan="off")
