"""Where engine errors become HTTP answers: every failure of a handler is a JSON response.

This module is where engine errors become HTTP outcomes (STYLE.md, section 5): the ones a
caller can act on get a 4xx naming what is wrong, backend trouble a 503 with
``Retry-After`` (queues redeliver), and anything else a 500 without details, logged with
its traceback.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    EngineError,
    IdempotencyKeyReusedError,
    InfrastructureError,
    InputTooLargeError,
    InputValidationError,
    InvalidRunStateError,
    RequestRejected,
    RunNotFoundError,
    UnknownSagaError,
)
from functions.http.request_parsing import HttpError

log = logging.getLogger("relay.http")

INFRASTRUCTURE_RETRY_SECONDS: Final = 1.0

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
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
            mapped = engine_error_response(exc)
            if mapped is None:
                return internal_error(request, exc)
            if isinstance(exc, ConfigurationError):  # the deployment's fault, not the caller's
                log.error("request failed on configuration: %s", exc, extra=log_context(request))
            elif mapped.status >= 500:
                log.warning("request deferred: %s", exc, extra=log_context(request))
            elif isinstance(exc, RequestRejected):  # an operator may have to act (limits)
                log.warning("request rejected by the backend: %s", exc, extra=log_context(request))
            return mapped.response()
        except Exception as exc:
            return internal_error(request, exc)

    return guarded


def engine_error_response(exc: EngineError) -> HttpError | None:
    """The HTTP answer to an engine error the caller can act on; None for our own bugs."""
    if isinstance(exc, UnknownSagaError):
        return HttpError(404, "unknown_saga", str(exc), saga=exc.saga)
    if isinstance(exc, RunNotFoundError):
        return HttpError(404, "run_not_found", str(exc), run_id=exc.run_id)
    if isinstance(exc, InputValidationError):
        return HttpError(422, "invalid_input", str(exc), detail=exc.errors)
    if isinstance(exc, InputTooLargeError):
        return HttpError(
            422, "input_too_large", str(exc), size_bytes=exc.size_bytes, limit=exc.limit_bytes
        )
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
            headers={"Retry-After": retry_after_header(INFRASTRUCTURE_RETRY_SECONDS)},
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
            headers={"Retry-After": retry_after_header(INFRASTRUCTURE_RETRY_SECONDS)},
            retry_after_seconds=INFRASTRUCTURE_RETRY_SECONDS,
        )
    return None


def internal_error(request: Request, exc: BaseException) -> Response:
    """Log the failure with its traceback; answer 500 (queues redeliver) without one."""
    log.error("request failed: %s", type(exc).__name__, exc_info=exc, extra=log_context(request))
    return JSONResponse(
        {"error": "internal", "message": "internal error; it was logged and may be retried"},
        status_code=500,
    )


def log_context(request: Request) -> dict[str, Any]:
    """The request's method, path, run and principal (when known) as log fields."""
    context: dict[str, Any] = {"method": request.method, "path": request.url.path}
    for field in ("run_id", "principal"):
        value = getattr(request.state, field, None)
        if value is not None:
            context[field] = value
    return context


async def http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (no such path, wrong method) as JSON, like every other error."""
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    # Only the method and path are echoed (never a header such as Host), shortened and
    # with anything unprintable escaped, so an answer cannot carry injected text.
    message = f"{printable(request.method, 16)} {printable(request.url.path, 200)}: {exc.detail}"
    return JSONResponse(
        {"error": codes.get(exc.status_code, "http_error"), "message": message},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    """Last resort outside any handler (middleware); handlers never let errors escape."""
    return internal_error(request, exc)


def printable(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, non-printable ones escaped (for echoing)."""
    cut = value[:limit] + ("..." if len(value) > limit else "")
    return cut if cut.isprintable() else repr(cut)[1:-1]


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def retry_later(seconds: float, body: dict[str, Any]) -> Response:
    """503 with ``Retry-After`` (whole seconds, at least 1); queues redeliver after it."""
    return JSONResponse(
        {**body, "retry_after_seconds": seconds},
        status_code=503,
        headers={"Retry-After": retry_after_header(seconds)},
    )
