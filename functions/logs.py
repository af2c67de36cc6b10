"""JSON log lines for the standard ``logging`` module, one object per line.

Cloud Logging and CloudWatch Logs Insights both parse a JSON object per line; the
``severity`` and ``message`` keys are the ones Cloud Logging lifts into its own fields.
Structured ``extra`` fields (``run_id``, ``step``, ``action``, ``attempt``) become keys,
so a run can be followed across functions with one query.

Each platform gets its own flavour (``RELAY_LOG_FORMAT``, default from ``RELAY_BACKEND``):

- ``gcp``: Cloud Logging's special keys
  (https://cloud.google.com/logging/docs/structured-logging):
  ``logging.googleapis.com/trace`` (``projects/<GOOGLE_CLOUD_PROJECT>/traces/<id>``),
  ``logging.googleapis.com/spanId`` and ``.../trace_sampled`` from the current request's
  ``traceparent`` or ``X-Cloud-Trace-Context`` header, so the request log and its lines
  group together; and ``logging.googleapis.com/labels`` with ``run_id``, ``saga`` and
  ``step``, which Cloud Logging indexes (they also stay top-level keys).
- ``aws``: ``aws_request_id`` (bound by the Lambda handler with ``bind_request``) and
  ``xray_trace_id`` beside the top-level ``run_id``, as Lambda Powertools logs them.
- ``plain``: neither.

The request's trace travels in a context variable: ``bind_request`` sets it (the ASGI
middleware in ``functions/http/app.py`` does, per HTTP request) and ``reset_request`` restores
the previous value. Worker threads started with ``run_in_threadpool`` copy the context,
so lines logged by the engine carry the trace too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, TextIO

REDACTED = "[REDACTED]"

_SECRET_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-relay-signature",
        "signing_key",
        "relay_signing_key",
        "password",
        "secret",
        "token",
    }
)
"""Keys whose values are replaced by ``REDACTED`` wherever they appear in an extra."""

# Every attribute a bare LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


LOG_FORMAT_ENV: Final = "RELAY_LOG_FORMAT"
LOG_FORMATS: Final = ("gcp", "aws", "plain")

TRACE_KEY: Final = "logging.googleapis.com/trace"
SPAN_ID_KEY: Final = "logging.googleapis.com/spanId"
TRACE_SAMPLED_KEY: Final = "logging.googleapis.com/trace_sampled"
LABELS_KEY: Final = "logging.googleapis.com/labels"
LABEL_EXTRAS: Final = ("run_id", "saga", "step")
"""Extras copied into Cloud Logging's indexed labels (as strings)."""


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What log lines learn about the request being served.

    Attributes:
        trace_id: 32 lowercase hex digits (W3C and Cloud Trace share the format).
        span_id: 16 lowercase hex digits.
        is_sampled: The trace's sampled flag, when the header carried one.
        aws_request_id: The Lambda invocation's request id.
    """

    trace_id: str | None = None
    span_id: str | None = None
    is_sampled: bool | None = None
    aws_request_id: str | None = None


_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "relay_request", default=None
)

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse_trace_headers(headers: Mapping[str, str]) -> RequestContext:
    """The trace of ``traceparent`` (W3C), else of ``X-Cloud-Trace-Context``; empty if neither.

    A malformed header is ignored (an empty context), never an error: a client's bad
    header must not fail the request or the log line.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    traced = _parse_traceparent(lowered.get("traceparent", "").strip())
    if traced is not None:
        return traced
    cloud = _CLOUD_TRACE.fullmatch(lowered.get("x-cloud-trace-context", "").strip())
    if cloud:
        trace_id, span_text, option = cloud.groups()
        trace_id = trace_id.lower()
        if trace_id == _ZERO_TRACE:
            return RequestContext()
        span_id = None
        # The legacy header's span id is a decimal uint64; Cloud Logging wants 16 hex digits.
        if span_text is not None and 0 < int(span_text) < 2**64:
            span_id = f"{int(span_text):016x}"
        is_sampled = None if option is None else option == "1"
        return RequestContext(trace_id=trace_id, span_id=span_id, is_sampled=is_sampled)
    return RequestContext()


def _parse_traceparent(text: str) -> RequestContext | None:
    """The W3C ``traceparent`` header's ids and sampled flag; None when it is invalid."""
    match = _TRACEPARENT.fullmatch(text)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    # Version ff is invalid; version 00 has no trailing fields; all-zero ids are invalid.
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return RequestContext(trace_id=trace_id, span_id=span_id, is_sampled=bool(int(flags, 16) & 1))


def bind_request(
    *, headers: Mapping[str, str] | None = None, aws_request_id: str | None = None
) -> contextvars.Token[RequestContext | None]:
    """Make log lines of the current context carry this request's trace or request id.

    Merged into what is already bound: the HTTP middleware binds the trace headers inside
    a Lambda invocation whose handler bound ``aws_request_id`` first, and both stay.

    Args:
        headers: The request's headers (``traceparent``, ``X-Cloud-Trace-Context``).
        aws_request_id: ``context.aws_request_id`` of the Lambda invocation.

    Returns:
        The token to pass to ``reset_request`` when the request is done.
    """
    current = _request.get() or RequestContext()
    if headers is not None:
        trace = parse_trace_headers(headers)
        current = replace(
            current, trace_id=trace.trace_id, span_id=trace.span_id, is_sampled=trace.is_sampled
        )
    if aws_request_id is not None:
        current = replace(current, aws_request_id=aws_request_id)
    return _request.set(current)


def reset_request(token: contextvars.Token[RequestContext | None]) -> None:
    """Restore what was bound before the ``bind_request`` that returned ``token``."""
    _request.reset(token)


def current_request() -> RequestContext | None:
    """What is bound in the current context (None outside any request)."""
    return _request.get()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, severity, logger, message, extras.

    Exceptions become an ``exception`` string field (the formatted traceback) so a
    multi-line traceback stays one log entry. ``log_format`` adds the platform's keys
    (see the module docstring); ``project`` is the Google Cloud project of trace names.
    """

    def __init__(self, *, log_format: str = "plain", project: str | None = None) -> None:
        super().__init__()
        self._log_format = log_format
        self._project = project

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "severity": _SEVERITY.get(record.levelno, record.levelname),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = redact(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        if self._log_format == "gcp":
            self._add_cloud_logging_keys(entry)
        elif self._log_format == "aws":
            _add_lambda_keys(entry)
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))

    def _add_cloud_logging_keys(self, entry: dict[str, Any]) -> None:
        request = _request.get()
        if request is not None and request.trace_id and self._project:
            entry[TRACE_KEY] = f"projects/{self._project}/traces/{request.trace_id}"
            if request.span_id:
                entry[SPAN_ID_KEY] = request.span_id
            if request.is_sampled is not None:
                entry[TRACE_SAMPLED_KEY] = request.is_sampled
        labels = {key: str(entry[key]) for key in LABEL_EXTRAS if entry.get(key) is not None}
        if labels:
            entry[LABELS_KEY] = labels


def _add_lambda_keys(entry: dict[str, Any]) -> None:
    request = _request.get()
    if request is not None and request.aws_request_id:
        entry.setdefault("aws_request_id", request.aws_request_id)
    # Lambda sets _X_AMZN_TRACE_ID per invocation: "Root=1-...;Parent=...;Sampled=1".
    xray = os.environ.get("_X_AMZN_TRACE_ID", "")
    root = next((part[5:] for part in xray.split(";") if part.startswith("Root=")), "")
    if root:
        entry.setdefault("xray_trace_id", root)


def redact(key: str, value: Any) -> Any:
    """``value`` with every secret-named field (at any depth) replaced by ``REDACTED``."""
    if key.lower() in _SECRET_NAMES:
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact("", item) for item in value]
    return value


class JsonLinesHandler(logging.Handler):
    """Writes each formatted record and a newline to ``stream``, or to the current stderr.

    Looking ``sys.stderr`` up per record (rather than once) keeps the handler valid when
    a host or a test runner swaps stderr after logging was configured.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Write one line; a broken stream is reported by ``handleError``, never raised."""
        try:
            stream = self._stream or sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_HANDLER_NAME = "relay-json"


LOG_LEVEL_ENV = "RELAY_LOG_LEVEL"


def log_format_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """``RELAY_LOG_FORMAT`` (gcp, aws, plain), else the one ``RELAY_BACKEND`` implies.

    Returns:
        The format, and the invalid value when ``RELAY_LOG_FORMAT`` named none (the format
        then comes from the backend).
    """
    env = os.environ if environ is None else environ
    name = env.get(LOG_FORMAT_ENV, "").strip().lower()
    if name in LOG_FORMATS:
        return name, None
    backend = env.get("RELAY_BACKEND", "").strip()
    implied = backend if backend in ("gcp", "aws") else "plain"
    return implied, (name or None)


def configure_logging(
    level: int | str | None = None,
    *,
    stream: TextIO | None = None,
    log_format: str | None = None,
) -> None:
    """Send the root logger's records to ``stream`` (stderr) as JSON lines.

    ``level`` defaults to ``RELAY_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR; INFO when unset).
    ``log_format`` (gcp, aws, plain) defaults to ``RELAY_LOG_FORMAT``, else to the format
    of ``RELAY_BACKEND``; trace names use ``GOOGLE_CLOUD_PROJECT``.
    An unknown name falls back to INFO with a warning rather than failing: this runs at
    import of an entry point, where raising would take the whole function down.
    Safe to call more than once (a warm container re-importing an entry point): the
    previous Relay handler is replaced, other handlers are left alone.
    """
    invalid: str | None = None
    if level is None:
        name = os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper() or "INFO"
        if name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            level = name
        else:
            level, invalid = "INFO", name
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    bad_format: str | None = None
    if log_format is None or log_format not in LOG_FORMATS:
        log_format, bad_format = log_format_from_env()
    handler = JsonLinesHandler(stream)
    handler.set_name(_HANDLER_NAME)
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    handler.setFormatter(JsonFormatter(log_format=log_format, project=project))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if invalid is not None:
        logging.getLogger("relay").warning(
            "%s=%r is not a log level; using INFO", LOG_LEVEL_ENV, invalid
        )
    if bad_format is not None:
        logging.getLogger("relay").warning(
            "%s=%r is not one of %s; using %s",
            LOG_FORMAT_ENV,
            bad_format,
            ", ".join(LOG_FORMATS),
            log_format,
        )
