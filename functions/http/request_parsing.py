"""Parsing HTTP requests into engine inputs, refusing bad ones with a precise 4xx.

Every function here either returns a clean value or raises ``HttpError`` naming the field,
header or query parameter that is wrong, so handlers in ``functions/http/app.py`` stay recipes
and a rejected request never reaches the engine (nothing is written).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.domain.records import Message
from core.domain.status import RunStatus
from core.domain.triggers import validate_topic

DEFAULT_LIST_LIMIT: Final = 50
MAX_LIST_LIMIT: Final = 1000


class HttpError(Exception):
    """Raised by a handler to refuse a request with ``status`` and a JSON error body.

    The body is ``{"error": code, "message": message, **fields}``; callers treat 4xx
    other than 401/403/429 as permanent, so only a request that can never succeed as
    sent gets one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        /,
        *,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.fields = fields

    def response(self) -> JSONResponse:
        """The response that refuses the request."""
        body = {"error": self.code, "message": self.message, **self.fields}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        # ASCII digits only: "²" passes str.isdigit and then fails int() (a 500).
        if not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
            raise HttpError(
                400, "invalid_header", "Content-Length is not a number", header="Content-Length"
            )
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "body_too_large", f"request body exceeds {limit} bytes", limit=limit)


MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays and objects accepted in a JSON body."""
MAX_JSON_INTEGER: Final = 2**63
"""Integers must lie in [-2**63, 2**63): every state store keeps them (Firestore: int64)."""
_MAX_NUMBER_TEXT: Final = 64


class JsonRefused(ValueError):
    """Raised while parsing: the document is JSON but of a kind Relay does not accept."""


def _reject_constant(name: str) -> Any:
    raise JsonRefused(f"contains {name}, which is not JSON (no NaN or Infinity)")


def _checked_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_TEXT:
        raise JsonRefused(f"contains an integer of {len(text)} digits (over 64-bit range)")
    value = int(text)
    if not -MAX_JSON_INTEGER <= value < MAX_JSON_INTEGER:
        raise JsonRefused("contains an integer outside the 64-bit range")
    return value


def _checked_float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_NUMBER_TEXT else math.inf
    if not math.isfinite(value):
        raise JsonRefused("contains a number too long or too large for a 64-bit float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            shown = key if len(key) <= 40 and key.isprintable() else f"{key[:40]!r}..."
            raise JsonRefused(f"repeats the key {shown!r} in one object")
        result[key] = value
    return result


def _check_text(text: str) -> None:
    # "\ud800" parses to a lone surrogate, which no UTF-8 store or answer can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRefused("contains a lone UTF-16 surrogate (\\ud800-\\udfff)") from None


def _check_document(document: Any) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH`` and lone surrogates (no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise JsonRefused(f"nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def loads_strict(text: str) -> Any:
    """Parse ``text`` as Relay accepts JSON.

    Refused: NaN/Infinity, a key repeated in one object, nesting deeper than
    ``MAX_JSON_DEPTH``, integers beyond 64 bits, floats that overflow, and lone surrogates
    (a high or low surrogate escape without its partner), which no UTF-8 store or answer
    can encode.

    Raises:
        ValueError: saying what is wrong (a ``json.JSONDecodeError`` for bad syntax).
    """
    try:
        document = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_checked_int,
            parse_float=_checked_float,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise JsonRefused(f"nests arrays or objects deeper than {MAX_JSON_DEPTH} levels") from None
    _check_document(document)
    return document


def parse_json(body: bytes, *, what: str) -> Any:
    """Strict JSON (``loads_strict``): UTF-8, not empty; 400 naming what is wrong."""
    if not body.strip():
        raise HttpError(400, "malformed_json", f"{what} is empty; send a JSON document")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "malformed_json", f"{what} is not UTF-8 encoded") from None
    try:
        return loads_strict(text)
    except JsonRefused as exc:
        raise HttpError(400, "malformed_json", f"{what} {exc}") from None
    except ValueError as exc:
        raise HttpError(400, "malformed_json", f"{what} is not valid JSON: {exc}") from None


JSON_MEDIA_TYPE: Final = "application/json"


def require_json_content_type(headers: Headers, body: bytes) -> None:
    """Refuse (415) a non-empty body not declared ``application/json`` (charset allowed).

    An empty body may omit the header. The message never echoes the header's value.
    """
    values = headers.getlist("content-type")
    if not values and not body:
        return
    media_type = values[0].partition(";")[0].strip().lower() if len(values) == 1 else ""
    if media_type != JSON_MEDIA_TYPE:
        raise HttpError(
            415,
            "unsupported_media_type",
            f"send the request body as {JSON_MEDIA_TYPE} (one Content-Type header)",
            header="Content-Type",
        )


def json_object(body: bytes, *, what: str) -> dict[str, Any]:
    """The body as a JSON object; 400 naming ``what`` when it is anything else."""
    payload = parse_json(body, what=what)
    if not isinstance(payload, dict):
        raise HttpError(400, f"malformed_{what}", f"{what} must be a JSON object")
    return payload


def idempotency_key(headers: Headers) -> str | None:
    """The ``Idempotency-Key`` header, checked: it names a run in the client key space.

    The rule is core's (``core.domain.run_ids``): one header of 1 to 200 printable ASCII
    characters; anything else is a 400 naming the header, before anything is written.
    """
    from core.domain.run_ids import MAX_CLIENT_KEY_LENGTH, is_valid_client_key

    values = headers.getlist("idempotency-key")
    if not values:
        return None
    key = values[0]
    if len(values) != 1 or not is_valid_client_key(key):
        raise HttpError(
            400,
            "invalid_header",
            f"Idempotency-Key must be one header of 1 to {MAX_CLIENT_KEY_LENGTH} "
            "printable ASCII characters",
            header="Idempotency-Key",
        )
    return key


def _query_error(parameter: str, message: str, error_type: str) -> HttpError:
    detail = [{"loc": ["query", parameter], "msg": message, "type": error_type}]
    return HttpError(
        422,
        "invalid_query",
        f"query parameter {parameter!r}: {message}",
        parameter=parameter,
        detail=detail,
    )


def parse_statuses(values: Sequence[str]) -> list[RunStatus] | None:
    """``status=A&status=B`` or ``status=A,B``; None when absent (any status)."""
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not names:
        return None
    try:
        return [RunStatus(name.upper()) for name in names]
    except ValueError:
        allowed = ", ".join(status.value for status in RunStatus)
        raise _query_error("status", f"must be one of {allowed}", "enum") from None


def parse_limit(text: str | None) -> int:
    """The ``limit`` query parameter; 422 naming it when not an integer in range."""
    if text is None:
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(text.strip())
    except ValueError:
        raise _query_error("limit", "must be an integer", "int_parsing") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise _query_error("limit", f"must be between 1 and {MAX_LIST_LIMIT}", "range")
    return limit


def parse_message(body: bytes) -> Message:
    """A queue delivery's body as a ``Message``; 400 with the reason otherwise."""
    payload = json_object(body, what="message")
    try:
        return Message.from_json(payload)
    except (ValueError, TypeError) as exc:
        raise HttpError(400, "malformed_message", str(exc)) from None


def parse_event(payload: Any) -> tuple[str, Any, str]:
    """``{"topic": str, "data": any JSON, "id": str}`` into its three parts."""
    if not isinstance(payload, dict):
        raise HttpError(400, "malformed_event", "event must be a JSON object")
    topic, event_id = payload.get("topic"), payload.get("id")
    for field, value in (("topic", topic), ("id", event_id)):
        if not isinstance(value, str) or not value:
            message = f"event field {field!r} must be a non-empty string"
            raise HttpError(400, "malformed_event", message)
    assert isinstance(topic, str) and isinstance(event_id, str)
    try:
        validate_topic(topic)  # here, so a ValueError from deeper down stays a 500
    except ValueError as exc:
        raise HttpError(400, "malformed_event", str(exc)) from None
    return topic, payload.get("data"), event_id


SCHEDULE_TIME_HEADER: Final = "X-CloudScheduler-ScheduleTime"
"""Cloud Scheduler's own scheduled time, used when the body names none."""


_LATEST_SCHEDULE_TIME: Final = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
"""Scheduled times end a day before datetime's last one, so any offset still formats."""


def scheduled_time(body: bytes, headers: Headers) -> float:
    """The scheduled time: the body's ``scheduled_time``, the scheduler's header, or now.

    Retried invocations must name the same time to find the same run; "now" is only a
    fallback for hand-made calls.
    """
    text: Any = None
    if body.strip():
        text = json_object(body, what="schedule").get("scheduled_time")
    text = text if text is not None else headers.get(SCHEDULE_TIME_HEADER)
    if text is None:
        return time.time()
    if not isinstance(text, str):
        raise HttpError(400, "malformed_schedule", "scheduled_time must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HttpError(
            400, "malformed_schedule", f"scheduled_time {text[:64]!r} is not an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        # An offset can push year 1 or 9999 out of datetime's range once in UTC; the run's
        # key formats the time again (iso_utc), so it must round-trip.
        stamp = moment.timestamp()
        datetime.fromtimestamp(stamp, tz=UTC)
    except (OverflowError, ValueError, OSError):
        stamp = -1.0
    if not 0 <= stamp < _LATEST_SCHEDULE_TIME:
        raise HttpError(
            400,
            "malformed_schedule",
            f"scheduled_time {text[:64]!r} is outside 1970-01-01..9999-12-30 (UTC)",
        )
    return stamp


# -- responses -----------------------------------------------------------------------
