"""The handlers of the HTTP API: each parses a request, makes one engine call, shapes the answer.

``PublicHandlers`` serve the run API (start, read, list) to callers the authenticator names,
within their grants (``functions/http/callers.py``); ``WorkerHandlers`` the deliveries
(queue, events, schedules, sweep) and the operator actions (retry, cancel, audited in the
run), which are authenticated by the delivery verifier before a byte of their body is parsed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.domain.audit import AuditEntry
from core.domain.records import RunRecord
from core.domain.status import RunStatus
from core.errors import RunNotFoundError
from functions.http.auth import DeliveryVerifier, Forbidden, Unauthenticated
from functions.http.callers import Authenticator, Caller, CallerRequest, Grants
from functions.http.errors import log_context, retry_later
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
    require_json_content_type,
    scheduled_time,
)
from functions.http.views import run_list_view, run_view

if TYPE_CHECKING:
    from core.engine.engine import Engine
    from core.engine.runs import StartResult

log = logging.getLogger("relay.http")

T = TypeVar("T")


class Handlers:
    """The handlers; each one parses, makes one engine call, and shapes the answer.

    Args:
        engine: Returns the engine (per request, in a worker thread: the first request,
            not the import, builds it).
        verifier: Authenticates deliveries and operator actions before anything is parsed.
        authenticator: Authenticates callers of the run API (start, read, list).
        max_body_bytes: Larger request bodies are refused with 413.
        event_topics: Returns ``RELAY_PUBSUB_TOPICS`` for messages without a topic.
    """

    def __init__(
        self,
        *,
        engine: Callable[[], Engine],
        verifier: DeliveryVerifier,
        authenticator: Authenticator,
        max_body_bytes: int,
        event_topics: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self._engine = engine
        self._verifier = verifier
        self._authenticator = authenticator
        self._max_body_bytes = max_body_bytes
        self._event_topics = event_topics

    async def healthz(self, request: Request) -> Response:
        """Liveness only: answers without building the engine (cold start)."""
        return JSONResponse({"status": "ok"})

    async def start_run(self, request: Request) -> Response:
        """``POST /v1/sagas/{name}/runs``: validate the input and start (or find) the run.

        The caller must hold ``start`` on the saga (403 otherwise, before the body is read).
        """
        name = request.path_params["name"]
        caller = await self.caller(request)
        if not caller.grants.may("start", name):
            message = f"{caller.identity} may not start runs of saga {name!r}"
            raise HttpError(403, "forbidden", message, saga=name)
        key = idempotency_key(request.headers)
        body = await self._body(request)
        require_json_content_type(request.headers, body)
        raw_input = parse_json(body, what="request body")
        result = await self._call(lambda e: e.runs.start(name, raw_input, idempotency_key=key))
        return _started(result)

    async def get_run(self, request: Request) -> Response:
        """``GET /v1/runs/{run_id}``: the run with its steps in definition order.

        A run of a saga the caller may not read is answered like a missing one (404), so
        the API does not reveal which run ids exist.
        """
        run_id = request.path_params["run_id"]
        grants = (await self.caller(request)).grants
        return JSONResponse(await self._call(lambda e: _run_view_of(e, run_id, readable=grants)))

    async def list_runs(self, request: Request) -> Response:
        """``GET /v1/runs?saga=&status=&limit=``: run headers of readable sagas, newest first.

        ``saga=`` naming a saga the caller may not read is a 403.
        """
        caller = await self.caller(request)
        query = request.query_params
        saga = query.get("saga") or None
        statuses = parse_statuses(query.getlist("status"))
        limit = parse_limit(query.get("limit"))
        if saga is not None and not caller.grants.may("read", saga):
            message = f"{caller.identity} may not read runs of saga {saga!r}"
            raise HttpError(403, "forbidden", message, saga=saga)
        readable = None if saga is not None else caller.grants.readable_sagas()
        runs = await self._call(
            lambda e: _readable_runs(
                e, saga=saga, readable=readable, statuses=statuses, limit=limit
            )
        )
        return JSONResponse({"runs": [run_list_view(run) for run in runs]})

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
        return retry_later(result.retry_after_seconds, retry)

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
        """``POST /v1/runs/{run_id}/retry``: resume a FAILED run with fresh retry budgets.

        Audited: who (the verified principal), from where and when, in the run's record.
        """
        await self._authenticated_body(request)
        run_id = request.state.run_id = request.path_params["run_id"]

        def retry(e: Engine) -> dict[str, Any]:
            e.runs.retry(run_id, audit=_audit_entry(e, request, "retry"))
            return _run_view_of(e, run_id)

        return JSONResponse(await self._call(retry))

    async def cancel_run(self, request: Request) -> Response:
        """``POST /v1/runs/{run_id}/cancel``: undo finished steps, then end CANCELLED.

        Audited: who (the verified principal), from where and when, in the run's record.
        """
        await self._authenticated_body(request)
        run_id = request.state.run_id = request.path_params["run_id"]

        def cancel(e: Engine) -> dict[str, Any]:
            e.runs.cancel(run_id, audit=_audit_entry(e, request, "cancel"))
            return _run_view_of(e, run_id)

        return JSONResponse(await self._call(cancel))

    # -- shared --------------------------------------------------------------------

    async def _call(self, operation: Callable[[Engine], T]) -> T:
        """Run ``operation`` on the engine in a worker thread (the engine blocks)."""
        return await run_in_threadpool(_with_engine, self._engine, operation)

    async def _body(self, request: Request) -> bytes:
        return await read_body(request, limit=self._max_body_bytes)

    async def caller(self, request: Request) -> Caller:
        """The run API caller of ``request`` (also kept as ``request.state.caller``).

        Public for the routes outside these handlers that the run API's callers only may
        read (``GET /openapi.json``).

        Raises:
            HttpError: 401 without a credential, 403 with one that does not check out.
        """
        asked = CallerRequest(
            headers=request.headers, source=client_address(request), scope=request.scope
        )
        try:
            # In a thread: authenticators may read the key store or fetch signing keys.
            caller = await run_in_threadpool(self._authenticator.authenticate, asked)
        except Unauthenticated as exc:
            challenge = {"WWW-Authenticate": exc.challenge}
            raise HttpError(401, "unauthenticated", str(exc), headers=challenge) from None
        except Forbidden as exc:
            raise HttpError(403, "forbidden", str(exc)) from None
        request.state.caller = caller
        return caller

    async def _authenticated_body(self, request: Request) -> bytes:
        """The body, once the verifier accepted it; nothing is parsed before that.

        The verifier sees the method and the path with its query string as sent (a
        signature or token is bound to them); who it says signed is kept as
        ``request.state.principal``.
        """
        body = await self._body(request)
        try:
            # In a thread: verifiers may read a key file or fetch signing certificates.
            principal = await run_in_threadpool(
                functools.partial(
                    self._verifier.verify,
                    method=request.method,
                    path=request_target(request),
                    body=body,
                    headers=request.headers,
                )
            )
        except Unauthenticated as exc:
            log.info("request refused: %s", exc, extra=log_context(request))
            challenge = {"WWW-Authenticate": exc.challenge}
            raise HttpError(401, "unauthenticated", str(exc), headers=challenge) from None
        except Forbidden as exc:  # the reason only: never the credential itself
            log.warning("request refused: %s", exc, extra=log_context(request))
            raise HttpError(403, "forbidden", str(exc)) from None
        request.state.principal = principal
        require_json_content_type(request.headers, body)
        return body


def request_target(request: Request) -> str:
    """The path and query string of ``request`` as the client sent them (what is signed).

    ``raw_path`` (the undecoded path, when the server provides it) is preferred, so a
    signer signs exactly the bytes it sends; the query string is appended after ``?``.
    """
    scope = request.scope
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


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


def _started(result: StartResult) -> Response:
    run = result.run
    return JSONResponse(
        {"run_id": run.run_id, "status": run.status.value, "created": result.is_created},
        status_code=202,
        headers={"Location": f"/v1/runs/{run.run_id}"},
    )


def _run_view_of(engine: Engine, run_id: str, *, readable: Grants | None = None) -> dict[str, Any]:
    """The run view; a run of a saga ``readable`` does not cover is "not found"."""
    snapshot = engine.runs.resolved(engine.runs.get(run_id))
    if readable is not None and not readable.may("read", snapshot.run.saga):
        raise RunNotFoundError(run_id=run_id)
    return run_view(snapshot, [step.name for step in engine.ordered_steps(snapshot)])


def _readable_runs(
    engine: Engine,
    *,
    saga: str | None,
    readable: frozenset[str] | None,
    statuses: Sequence[RunStatus] | None,
    limit: int,
) -> list[RunRecord]:
    """The newest ``limit`` runs of ``saga``, or of the ``readable`` sagas (None: all)."""
    if saga is not None or readable is None:
        return engine.runs.list(saga=saga, statuses=statuses, limit=limit)
    runs = [
        run
        for name in sorted(readable)
        for run in engine.runs.list(saga=name, statuses=statuses, limit=limit)
    ]
    runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
    return runs[:limit]


def client_address(request: Request) -> str:
    """The client's address as the host saw it (Mangum: the API Gateway source IP)."""
    return request.client.host if request.client else "unknown"


def _audit_entry(engine: Engine, request: Request, action: str) -> AuditEntry:
    """Who asked for ``action`` (the delivery verifier's principal), from where, when."""
    principal = getattr(request.state, "principal", None) or "operator"
    return AuditEntry.of(
        action=action, actor=str(principal), source=client_address(request), at=engine.clock.now()
    )
