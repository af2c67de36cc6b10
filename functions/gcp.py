"""functions-framework targets for Cloud Run functions: ``api``, ``worker``, ``relay``, ``pubsub``.

Each target receives the framework's Starlette ``Request`` and dispatches it through
Relay's own routed app (``functions/http/app.py``), returning the captured response, so one
target serves a whole route table (DESIGN.md, "One app, three hosts")::

    functions-framework --asgi --source functions/gcp.py --target relay

``pubsub`` is a CloudEvent target for Eventarc Pub/Sub triggers
(``google.cloud.pubsub.topic.v1.messagePublished``); a Pub/Sub *push* subscription
posts to the worker's ``/v1/events`` instead. Both parse messages alike
(``functions/http/push_parsing.py``).

Target names are stable: Terraform's ``entry_point`` refers to them. Importing this
module builds no engine and opens no database; the first request that needs the engine
builds it (``functions.wiring.get_engine``), so health checks stay cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# ``--source functions/gcp.py`` loads this file as a top-level module named "gcp" and
# puts only functions/ on sys.path; the project root must be importable for
# ``functions.*`` and ``core.*`` when the bundle is not pip-installed (a deployed
# source upload).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from cloudevents.http.event import CloudEvent  # noqa: E402
from functions_framework import aio  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.types import ASGIApp, Message  # noqa: E402

from core.errors import RequestRejected  # noqa: E402
from functions.http.app import ADMIN, ALL_ROUTES, PUBLIC_API, WORKER, create_app  # noqa: E402
from functions.http.auth import DeliveryVerifier, LazyVerifier  # noqa: E402
from functions.http.callers import Authenticator, LazyAuthenticator  # noqa: E402
from functions.http.push_parsing import DeadLetter, log_dead_letter, parse_cloud_event  # noqa: E402
from functions.logs import configure_logging  # noqa: E402

if TYPE_CHECKING:
    from core.engine.engine import Engine

configure_logging()


def _engine() -> Engine:
    # Imported here: the engine modules (and, through the backend, SQLite or a cloud SDK)
    # load on the first request that needs them, not at cold start.
    from functions.wiring import get_engine

    return get_engine()


def _verifier() -> DeliveryVerifier:
    from functions.http.verifiers import verifier_for
    from functions.wiring import get_settings

    return verifier_for(get_settings())


def _authenticator() -> Authenticator:
    from functions.wiring import get_authenticator

    return get_authenticator()


def _event_topics() -> Mapping[str, str]:
    from functions.wiring import get_settings

    return get_settings().pubsub_topics


_VERIFIER = LazyVerifier(_verifier)
_AUTHENTICATOR = LazyAuthenticator(_authenticator)
_API_APP = create_app(
    engine=_engine,
    verifier=_VERIFIER,
    authenticator=_AUTHENTICATOR,
    include=frozenset({PUBLIC_API}),
)
_WORKER_APP = create_app(
    engine=_engine,
    verifier=_VERIFIER,
    authenticator=_AUTHENTICATOR,
    include=frozenset({WORKER, ADMIN}),
    event_topics=_event_topics,
)
_RELAY_APP = create_app(
    engine=_engine,
    verifier=_VERIFIER,
    authenticator=_AUTHENTICATOR,
    include=ALL_ROUTES,
    event_topics=_event_topics,
)

# Keys the framework's own routing put in the scope; Relay's router sets its own.
_FRAMEWORK_SCOPE_KEYS = ("app", "router", "endpoint", "route", "path_params")


async def dispatch(app: ASGIApp, request: Request) -> Response:
    """Run ``request`` through ``app`` and return the response it sent, buffered.

    The framework already matched the request to the target's catch-all route; Relay's
    app matches it again on the full path. Our handlers never raise (they answer 500
    themselves), so the framework's plain-text error handler is never reached.
    """
    scope = {k: v for k, v in request.scope.items() if k not in _FRAMEWORK_SCOPE_KEYS}
    captured: dict[str, Any] = {"status": 500, "headers": []}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured["status"] = message["status"]
            captured["headers"] = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, request.receive, send)
    response = Response(content=b"".join(chunks), status_code=captured["status"])
    response.raw_headers = captured["headers"]  # as sent, content-length included
    return response


@aio.http
async def api(request: Request) -> Response:
    """Public API: start runs, read and list them, and ``/healthz``."""
    return await dispatch(_API_APP, request)


@aio.http
async def worker(request: Request) -> Response:
    """Deliveries (steps, events, schedules), retry/cancel by hand, and ``/healthz``."""
    return await dispatch(_WORKER_APP, request)


@aio.http
async def relay(request: Request) -> Response:
    """Every route in one function (``relay dev`` and small deployments)."""
    return await dispatch(_RELAY_APP, request)


@aio.cloud_event
def pubsub(event: CloudEvent) -> None:
    """Eventarc Pub/Sub trigger: start (or resume) the runs the message's topic reaches.

    Eventarc retries on an exception (answered 500) and acknowledges on return. So a
    message that can never be processed returns after logging it as dead-lettered, and
    a retryable engine error (store or queue unavailable) raises, to be redelivered.
    Synchronous on purpose: the framework runs it in a worker thread, as the engine
    blocks. Authentication is Cloud Run's: the function is private and only Eventarc's
    service account holds ``roles/run.invoker`` (the event carries no headers to check).
    """
    try:
        parsed = parse_cloud_event(
            event_type=str(event["type"]),
            source=str(event["source"]),
            event_id=str(event["id"]),
            data=event.get_data(),
            topics=_event_topics(),
        )
    except DeadLetter as exc:
        log_dead_letter(exc)
        return
    try:
        _engine().triggers.publish(topic=parsed.topic, data=parsed.data, event_id=parsed.event_id)
    except RequestRejected as exc:  # refused for good: a redelivery would be refused again
        shape = "Eventarc Pub/Sub CloudEvent"
        log_dead_letter(
            DeadLetter(str(exc), message_id=parsed.event_id, subscription=None, shape=shape)
        )
