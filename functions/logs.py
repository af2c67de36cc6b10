"""JSON log lines for the standard ``logging`` module, one object per line.

Cloud Logging and CloudWatch Logs Insights both parse a JSON object per line; the
``severity`` and ``message`` keys are the ones Cloud Logging lifts into its own fields.
Structured ``extra`` fields (``run_id``, ``step``, ``action``, ``attempt``) become keys,
so a run can be followed across functions with one query.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

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


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, severity, logger, message, extras.

    Exceptions become an ``exception`` string field (the formatted traceback) so a
    multi-line traceback stays one log entry.
    """

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
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


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


def configure_logging(level: int | str | None = None, *, stream: TextIO | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) as JSON lines.

    ``level`` defaults to ``RELAY_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR; INFO when unset).
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
    handler = JsonLinesHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if invalid is not None:
        logging.getLogger("relay").warning(
            "%s=%r is not a log level; using INFO", LOG_LEVEL_ENV, invalid
        )
