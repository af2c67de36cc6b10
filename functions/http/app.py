"""Relay's HTTP API as one Starlette app: the public run API and the worker's delivery routes.

The same app serves every host (DESIGN.md, "One app, three hosts"): ``functions/gcp.py``
dispatches functions-framework requests into it, Mangum wraps it on Lambda, and
``relay dev`` serves it with uvicorn. Each handler parses the request into one engine
call and maps the outcome, or the engine error, to a status code; this module is where
engine errors become HTTP outcomes (STYLE.md, section 5).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core.domain.records import RunRecord
from core.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EngineError,
    IdempotencyKeyReusedError,
    InfrastructureError,
    InputValidationError,
    InvalidRunStateError,
    RequestRejected,
    RunNotFoundError,
    UnknownSagaError,
)
from functions.http.auth import DeliveryVerifier, Forbidden, Unauthenticated
from functions.http.push_parsing import (
    DeadLetter,
    is_schedule_time_given,
    latest_fire_time,
    log_dead_letter,
    parse_pushed_event,
)
from functions.http.request_parsing import (
    HttpError,
    idempotency_key,
    json_object,
    parse_json,
    parse_limit,
    parse_message,
    parse_statuses,
    read_body,
    scheduled_time,
)
from functions.http.views import run_header_view, run_view
from functions.logs import bind_request, reset_request

if TYPE_CHECKING:
    from core.engine.engine import Engine
    from core.engine.runs import StartResult

log = logging.getLogger("relay.http")

PUBLIC_API: Final = "api"
"""Route group: start runs, read and list them (``POST /v1/sagas/..``, ``GET /v1/runs..``)."""
WORKER: Final = "worker"
"""Route group: queue, event and scheduler deliveries (``/v1/steps``, ``/v1/events``...)."""
ADMIN: Final = "admin"
"""Route group: retry and cancel runs by hand; authenticated like deliveries."""
ALL_ROUTES: Final = frozenset({PUBLIC_API, WORKER, ADMIN})

MAX_BODY_BYTES: Final = 1024 * 1024
INFRASTRUCTURE_RETRY_SECONDS: Final = 1.0

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    *,
    engine: Callable[[], Engine],
    verifier: DeliveryVerifier,
    include: frozenset[str] = ALL_ROUTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    event_topics: Callable[[], Mapping[str, str]] = dict,
) -> Starlette:
    """The ASGI app serving the route groups in ``include`` plus ``GET /healthz``.

    Args:
        engine: Returns the engine; called per request, in a worker thread, so the
            first request (not the import) builds it and health checks never do.
        verifier: Authenticates worker and admin requests before anything is parsed.
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
    api = _Api(
        engine=engine,
        verifier=verifier,
        max_body_bytes=max_body_bytes,
        event_topics=event_topics,
    )
    routes = [Route("/healthz", _guarded(api.healthz), methods=["GET"])]
    if PUBLIC_API in include:
        routes += [
            Route("/v1/sagas/{name}/runs", _guarded(api.start_run), methods=["POST"]),
            Route("/v1/runs", _guarded(api.list_runs), methods=["GET"]),
            Route("/v1/runs/{run_id}", _guarded(api.get_run), methods=["GET"]),
        ]
    if WORKER in include:
        routes += [
            Route("/v1/steps", _guarded(api.deliver_step), methods=["POST"]),
            Route("/v1/events", _guarded(api.deliver_event), methods=["POST"]),
            Route("/v1/schedules/{name}", _guarded(api.fire_schedule), methods=["POST"]),
            Route("/v1/sweep", _guarded(api.sweep), methods=["POST"]),
        ]
    if ADMIN in include:
        routes += [
            Route("/v1/runs/{run_id}/retry", _guarded(api.retry_run), methods=["POST"]),
            Route("/v1/runs/{run_id}/cancel", _guarded(api.cancel_run), methods=["POST"]),
        ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={HTTPException: _http_exception, Exception: _unhandled_exception},
    )


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


class _Api:
    """The handlers; each one parses, makes one engine call, and shapes the answer."""

    def __init__(
        self,
        *,
        engine: Callable[[], Engine],
        verifier: DeliveryVerifier,
        max_body_bytes: int,
        event_topics: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self._engine = engine
        self._verifier = verifier
        self._max_body_bytes = max_body_bytes
        self._event_topics = event_topics

    async def healthz(self, request: Request) -> Response:
        """Liveness only: answers without building the engine (cold start)."""
        return JSONResponse({"status": "ok"})

    async def start_run(self, request: Request) -> Response:
        """``POST /v1/sagas/{name}/runs``: validate the input and start (or find) the run."""
        name = request.path_params["name"]
        key = idempotency_key(request.headers)
        raw_input = parse_json(await self._body(request), what="request body")
        result = await self._call(lambda e: e.runs.start(name, raw_input, idempotency_key=key))
        return _started(result)

    async def get_run(self, request: Request) -> Response:
        """``GET /v1/runs/{run_id}``: the run with its steps in definition order."""
        run_id = request.path_params["run_id"]
        return JSONResponse(await self._call(lambda e: _run_view_of(e, run_id)))

    async def list_runs(self, request: Request) -> Response:
        """``GET /v1/runs?saga=&status=&limit=``: run headers, newest first."""
        query = request.query_params
        saga = query.get("saga") or None
        statuses = parse_statuses(query.getlist("status"))
        limit = parse_limit(query.get("limit"))
        runs = await self._call(lambda e: e.runs.list(saga=saga, statuses=statuses, limit=limit))
        return JSONResponse({"runs": [run_header_view(run) for run in runs]})

    async def deliver_step(self, request: Request) -> Response:
        """``POST /v1/steps``: one queue delivery; 200 acknowledges, 503 asks for redelivery."""
        body = await self._authenticated_body(request)
        message = parse_message(body)
        request.state.run_id = message.run_id
        cloud_task = _cloud_task_headers(request)
        if cloud_task:  # which Cloud Tasks task and try this is, beside the message's attempt
            context = {"run_id": message.run_id, "step": message.step, "attempt": message.attempt}
            log.info("step delivery from Cloud Tasks", extra={**context, **cloud_task})
        result = await self._call(lambda e: e.handle(message))
        if result.is_done:
            return JSONResponse({"status": "done", "detail": result.detail})
        retry = {"status": "retry", "detail": result.detail}
        return _retry_later(result.retry_after_seconds, retry)

    async def deliver_event(self, request: Request) -> Response:
        """``POST /v1/events``: a Pub/Sub push or Relay event, published to the engine.

        A Pub/Sub message that can never be processed is acknowledged (200) and logged
        as dead-lettered; a retryable engine error answers 503 so Pub/Sub redelivers.
        """
        body = await self._authenticated_body(request)
        try:
            event = parse_pushed_event(body, topics=self._event_topics())
        except DeadLetter as exc:
            log_dead_letter(exc)
            dead = {"status": "dead_lettered", "message_id": exc.message_id, "reason": exc.reason}
            return JSONResponse(dead, status_code=200)
        outcome = await self._call(
            lambda e: e.triggers.publish(
                topic=event.topic, data=event.data, event_id=event.event_id
            )
        )
        runs = [started.run.run_id for started in outcome.started]
        return JSONResponse(
            {"runs": runs, "resumed": outcome.resumed, "rejected": outcome.rejected},
            status_code=202,
        )

    async def fire_schedule(self, request: Request) -> Response:
        """``POST /v1/schedules/{name}``: start the run of one scheduled time (idempotent)."""
        from core.engine.triggers import UnknownScheduleError  # the engine is loaded by now

        body = await self._authenticated_body(request)
        name = request.path_params["name"]
        scheduled_at = scheduled_time(body, request.headers)
        is_given = is_schedule_time_given(body, request.headers)

        def fire(e: Engine) -> StartResult:
            # Without a scheduled time, the cron's latest one: a retried call finds the run.
            at = scheduled_at
            if not is_given:
                at = latest_fire_time([s for _, s in e.triggers.schedules()], name=name, now=at)
            return e.triggers.fire_schedule(name=name, scheduled_at=at)

        try:
            result = await self._call(fire)
        except UnknownScheduleError as exc:
            raise HttpError(404, "unknown_schedule", str(exc), schedule=name) from None
        return _started(result)

    async def sweep(self, request: Request) -> Response:
        """``POST /v1/sweep``: re-send overdue messages of stalled runs (a scheduler job calls it).

        Optional body ``{"stale_after_seconds": N}`` (default 120): a run is re-driven when
        a message its state needs is overdue by more than N seconds, at most once per
        back-off period of that run, within a bounded amount of work per call
        (``core/engine/sweeper.py``). Answers the sweep's report (``redriven`` and counts).
        """
        from core.engine.sweeper import DEFAULT_SWEEP_STALE_SECONDS  # the engine is loaded now

        body = await self._authenticated_body(request)
        stale = DEFAULT_SWEEP_STALE_SECONDS
        if body.strip():
            value = json_object(body, what="sweep").get("stale_after_seconds", stale)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                message = "stale_after_seconds must be a non-negative number"
                raise HttpError(400, "malformed_sweep", message)
            stale = float(value)
        report = await self._call(lambda e: e.sweeper.sweep(stale_after_seconds=stale))
        return JSONResponse(report.to_json())

    async def retry_run(self, request: Request) -> Response:
        """``POST /v1/runs/{run_id}/retry``: resume a FAILED run with fresh retry budgets."""
        await self._authenticated_body(request)
        run_id = request.state.run_id = request.path_params["run_id"]
        return JSONResponse(await self._call(lambda e: _run_view_after(e, run_id, e.runs.retry)))

    async def cancel_run(self, request: Request) -> Response:
        """``POST /v1/runs/{run_id}/cancel``: undo finished steps, then end CANCELLED."""
        await self._authenticated_body(request)
        run_id = request.state.run_id = request.path_params["run_id"]
        return JSONResponse(await self._call(lambda e: _run_view_after(e, run_id, e.runs.cancel)))

    # -- shared --------------------------------------------------------------------

    async def _call(self, operation: Callable[[Engine], T]) -> T:
        """Run ``operation`` on the engine in a worker thread (the engine blocks)."""
        return await run_in_threadpool(_with_engine, self._engine, operation)

    async def _body(self, request: Request) -> bytes:
        return await read_body(request, limit=self._max_body_bytes)

    async def _authenticated_body(self, request: Request) -> bytes:
        """The body, once the verifier accepted it; nothing is parsed before that."""
        body = await self._body(request)
        try:
            # In a thread: verifiers may read a key file or fetch signing certificates.
            await run_in_threadpool(self._verifier.verify, body, request.headers)
        except Unauthenticated as exc:
            challenge = {"WWW-Authenticate": exc.challenge}
            raise HttpError(401, "unauthenticated", str(exc), headers=challenge) from None
        except Forbidden as exc:
            raise HttpError(403, "forbidden", str(exc)) from None
        return body


_CLOUD_TASKS_HEADERS: Final = {
    "X-CloudTasks-TaskName": "task_name",
    "X-CloudTasks-QueueName": "queue_name",
    "X-CloudTasks-TaskRetryCount": "task_retry_count",
    "X-CloudTasks-TaskExecutionCount": "task_execution_count",
}


def _cloud_task_headers(request: Request) -> dict[str, str | int]:
    """The Cloud Tasks headers of a delivery as log fields (counts as integers); {} if none.

    Read only after authentication, so they come from Cloud Tasks (which overrides any
    task-supplied values) or from a holder of the worker's service-account token.
    """
    fields: dict[str, str | int] = {}
    for header, field in _CLOUD_TASKS_HEADERS.items():
        value = request.headers.get(header)
        if value is not None:
            fields[field] = int(value) if value.isascii() and value.isdigit() else value[:500]
    return fields


def _with_engine(factory: Callable[[], Engine], operation: Callable[[Engine], T]) -> T:
    return operation(factory())


# -- error mapping -------------------------------------------------------------------


def _guarded(endpoint: Endpoint) -> Endpoint:
    """Turn every way ``endpoint`` can fail into a JSON response; nothing escapes.

    Nothing may escape because under functions-framework an exception would reach its
    plain-text 500 handler, and under Starlette's own error middleware it is re-raised
    after the response is sent.
    """

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HttpError as exc:
            return exc.response()
        except EngineError as exc:
            mapped = _engine_error(exc)
            if mapped is None:
                return _internal_error(request, exc)
            if isinstance(exc, ConfigurationError):  # the deployment's fault, not the caller's
                log.error("request failed on configuration: %s", exc, extra=_log_context(request))
            elif mapped.status >= 500:
                log.warning("request deferred: %s", exc, extra=_log_context(request))
            elif isinstance(exc, RequestRejected):  # an operator may have to act (limits)
                log.warning("request rejected by the backend: %s", exc, extra=_log_context(request))
            return mapped.response()
        except Exception as exc:
            return _internal_error(request, exc)

    return guarded


def _engine_error(exc: EngineError) -> HttpError | None:
    """The HTTP answer to an engine error the caller can act on; None for our own bugs."""
    if isinstance(exc, UnknownSagaError):
        return HttpError(404, "unknown_saga", str(exc), saga=exc.saga)
    if isinstance(exc, RunNotFoundError):
        return HttpError(404, "run_not_found", str(exc), run_id=exc.run_id)
    if isinstance(exc, InputValidationError):
        return HttpError(422, "invalid_input", str(exc), detail=exc.errors)
    if isinstance(exc, IdempotencyKeyReusedError):
        return HttpError(409, "idempotency_key_reused", str(exc), run_id=exc.run_id)
    if isinstance(exc, InvalidRunStateError):
        return HttpError(409, "invalid_run_state", str(exc), run_id=exc.run_id, status=exc.status)
    if isinstance(exc, ConfigurationError):
        # A saga module that does not import, a missing setting: the operator must act, the
        # caller may retry later. The details go to the log only (they name modules and
        # settings), never to the public body.
        return HttpError(
            503,
            "misconfigured",
            "this deployment cannot serve the request (a configuration error, logged for "
            "its operator)",
            headers={"Retry-After": _retry_after_header(INFRASTRUCTURE_RETRY_SECONDS)},
            retry_after_seconds=INFRASTRUCTURE_RETRY_SECONDS,
        )
    if isinstance(exc, RequestRejected):
        # For good: a redelivery would be refused again (a queue drops it as poison).
        return HttpError(422, "request_rejected", str(exc), service=exc.service)
    if isinstance(exc, InfrastructureError | ConcurrencyConflict):
        # Both pass: a backend that was busy or a run that kept changing under us.
        return HttpError(
            503,
            "unavailable",
            str(exc),
            headers={"Retry-After": _retry_after_header(INFRASTRUCTURE_RETRY_SECONDS)},
            retry_after_seconds=INFRASTRUCTURE_RETRY_SECONDS,
        )
    return None


def _internal_error(request: Request, exc: BaseException) -> Response:
    """Log the failure with its traceback; answer 500 (queues redeliver) without one."""
    log.error("request failed: %s", type(exc).__name__, exc_info=exc, extra=_log_context(request))
    return JSONResponse(
        {"error": "internal", "message": "internal error; it was logged and may be retried"},
        status_code=500,
    )


def _log_context(request: Request) -> dict[str, Any]:
    context: dict[str, Any] = {"method": request.method, "path": request.url.path}
    run_id = getattr(request.state, "run_id", None)
    if run_id is not None:
        context["run_id"] = run_id
    return context


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, wrong method) as JSON, like every other error."""
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(
        {"error": codes.get(exc.status_code, "http_error"), "message": message},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unhandled_exception(request: Request, exc: Exception) -> Response:
    """Last resort outside any handler (middleware); handlers never let errors escape."""
    return _internal_error(request, exc)


# -- request parsing -----------------------------------------------------------------


def _started(result: StartResult) -> Response:
    run = result.run
    return JSONResponse(
        {"run_id": run.run_id, "status": run.status.value, "created": result.is_created},
        status_code=202,
        headers={"Location": f"/v1/runs/{run.run_id}"},
    )


def _retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def _retry_later(seconds: float, body: dict[str, Any]) -> Response:
    """503 with ``Retry-After`` (whole seconds, at least 1); queues redeliver after it."""
    return JSONResponse(
        {**body, "retry_after_seconds": seconds},
        status_code=503,
        headers={"Retry-After": _retry_after_header(seconds)},
    )


def _run_view_of(engine: Engine, run_id: str) -> dict[str, Any]:
    snapshot = engine.runs.get(run_id)
    return run_view(snapshot, [step.name for step in engine.ordered_steps(snapshot)])


def _run_view_after(
    engine: Engine, run_id: str, operation: Callable[[str], RunRecord]
) -> dict[str, Any]:
    operation(run_id)
    return _run_view_of(engine, run_id)
