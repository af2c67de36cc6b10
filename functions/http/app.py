"""Relay's HTTP API as one Starlette app: the public run API and the worker's delivery routes.

The same app serves every host (DESIGN.md, "One app, three hosts"): ``functions/gcp.py``
dispatches functions-framework requests into it, Mangum wraps it on Lambda, and
``relay dev`` serves it with uvicorn. Each handler parses the request into one engine
call and maps the outcome, or the engine error, to a status code; this module is where
engine errors become HTTP outcomes (STYLE.md, section 5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import ConfigurationError
from functions.http.auth import DeliveryVerifier
from functions.http.callers import Authenticator
from functions.http.errors import guarded, http_exception, unhandled_exception
from functions.http.handlers import Handlers
from functions.http.openapi import OPENAPI_PATH, OpenApiEndpoint
from functions.logs import bind_request, reset_request

if TYPE_CHECKING:
    from core.engine.engine import Engine

PUBLIC_API: Final = "api"
"""Route group: start runs, read and list them (``POST /v1/sagas/..``, ``GET /v1/runs..``)."""
WORKER: Final = "worker"
"""Route group: queue, event and scheduler deliveries (``/v1/steps``, ``/v1/events``...)."""
ADMIN: Final = "admin"
"""Route group: retry and cancel runs by hand; authenticated like deliveries."""
ALL_ROUTES: Final = frozenset({PUBLIC_API, WORKER, ADMIN})

MAX_BODY_BYTES: Final = 1024 * 1024


def create_app(
    *,
    engine: Callable[[], Engine],
    verifier: DeliveryVerifier,
    authenticator: Authenticator,
    include: frozenset[str] = ALL_ROUTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    event_topics: Callable[[], Mapping[str, str]] = dict,
) -> Starlette:
    """The ASGI app serving the route groups in ``include`` plus ``GET /healthz``.

    Args:
        engine: Returns the engine; called per request, in a worker thread, so the
            first request (not the import) builds it and health checks never do.
        verifier: Authenticates worker and admin requests before anything is parsed.
        authenticator: Authenticates run API callers; their grants decide which sagas
            they may start and read (``functions/http/callers.py``).
        include: Route groups to serve (``PUBLIC_API``, ``WORKER``, ``ADMIN``), so a
            public function does not expose the worker's routes.
        max_body_bytes: Larger request bodies are refused with 413.
        event_topics: Returns ``RELAY_PUBSUB_TOPICS`` (Pub/Sub subscription or topic id
            to Relay topic) for messages without a topic attribute; called per event.

    Raises:
        ConfigurationError: ``include`` names an unknown route group.
    """
    unknown = sorted(include - ALL_ROUTES)
    if unknown:
        raise ConfigurationError(
            f"unknown route group(s) {unknown}; choose from {sorted(ALL_ROUTES)}"
        )
    api = Handlers(
        engine=engine,
        verifier=verifier,
        authenticator=authenticator,
        max_body_bytes=max_body_bytes,
        event_topics=event_topics,
    )
    routes = [Route("/healthz", guarded(api.healthz), methods=["GET"])]
    if PUBLIC_API in include:
        docs = OpenApiEndpoint(engine=engine, include=include, authenticate=api.caller)
        routes += [
            Route("/v1/sagas/{name}/runs", guarded(api.start_run), methods=["POST"]),
            Route("/v1/runs", guarded(api.list_runs), methods=["GET"]),
            Route("/v1/runs/{run_id}", guarded(api.get_run), methods=["GET"]),
            Route(OPENAPI_PATH, guarded(docs.serve), methods=["GET"]),
        ]
    if WORKER in include:
        routes += [
            Route("/v1/steps", guarded(api.deliver_step), methods=["POST"]),
            Route("/v1/events", guarded(api.deliver_event), methods=["POST"]),
            Route("/v1/schedules/{name}", guarded(api.fire_schedule), methods=["POST"]),
            Route("/v1/sweep", guarded(api.sweep), methods=["POST"]),
        ]
    if ADMIN in include:
        routes += [
            Route("/v1/runs/{run_id}/retry", guarded(api.retry_run), methods=["POST"]),
            Route("/v1/runs/{run_id}/cancel", guarded(api.cancel_run), methods=["POST"]),
        ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={HTTPException: http_exception, Exception: unhandled_exception},
    )
    # No trailing-slash redirects: a 307 to the same path plus "/" built its Location from
    # the request's Host header (issue 10, finding 10); an unknown path is a plain 404.
    app.router.redirect_slashes = False
    return app


class RequestContextMiddleware:
    """Binds the request's trace headers for log lines while the request is served.

    Every host runs it (functions-framework dispatch, Mangum, ``relay dev``), so Cloud
    Logging groups a request's lines under its trace (``functions.logs``). The binding is
    reset afterwards; worker threads of ``run_in_threadpool`` see it through the copied
    context.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` with its trace bound (HTTP only; lifespan passes through)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        token = bind_request(headers=headers)
        try:
            await self._app(scope, receive, send)
        finally:
            reset_request(token)
