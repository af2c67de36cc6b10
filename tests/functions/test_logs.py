"""JSON log lines: one object per record, extras as keys, secrets redacted."""

from __future__ import annotations

import io
import json
import logging

import pytest

from functions.http.auth import HmacVerifier
from functions.logs import REDACTED, configure_logging
from tests.support.entry_points import SIGNING_KEY


def emit(*args: object, **kwargs: object) -> dict[str, object]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    logging.getLogger("relay.test").info(*args, **kwargs)  # type: ignore[arg-type]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry: dict[str, object] = json.loads(lines[0])
    return entry


def test_a_record_becomes_one_json_object_with_its_extras() -> None:
    """Time, severity, logger, message and extra fields (run_id, step...) are keys."""
    entry = emit(
        "step %s committed", "charge", extra={"run_id": "r-1", "step": "charge", "attempt": 2}
    )

    assert entry["severity"] == "INFO"
    assert entry["logger"] == "relay.test"
    assert entry["message"] == "step charge committed"
    assert (entry["run_id"], entry["step"], entry["attempt"]) == ("r-1", "charge", 2)
    assert str(entry["time"]).endswith("Z")


def test_exceptions_are_one_string_field() -> None:
    """A traceback stays inside the one log line, as the ``exception`` field."""
    stream = io.StringIO()
    configure_logging(logging.INFO, stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("relay.test").exception("failed", extra={"run_id": "r-2"})

    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert "ValueError: boom" in entry["exception"]
    assert entry["run_id"] == "r-2"


def test_secret_headers_and_keys_are_redacted() -> None:
    """Authorization and signature headers, and signing keys, never reach a log line."""
    signature = "t=1,v1=" + "a" * 64
    entry = emit(
        "delivery",
        extra={
            "headers": {
                "Authorization": "Bearer abc",
                "X-Relay-Signature": signature,
                "Accept": "*/*",
            },
            "signing_key": SIGNING_KEY.decode(),
            "verifier": HmacVerifier(SIGNING_KEY),
        },
    )

    text = json.dumps(entry)
    assert entry["headers"] == {
        "Authorization": REDACTED,
        "X-Relay-Signature": REDACTED,
        "Accept": "*/*",
    }
    assert entry["signing_key"] == REDACTED
    assert SIGNING_KEY.decode() not in text and signature not in text and "abc" not in text


def test_configuring_twice_keeps_one_relay_handler() -> None:
    """Re-importing an entry point in a warm container does not duplicate log lines."""
    configure_logging()
    configure_logging()

    names = [handler.get_name() for handler in logging.getLogger().handlers]
    assert names.count("relay-json") == 1


def test_log_level_comes_from_relay_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """RELAY_LOG_LEVEL sets the level; an unknown name falls back to INFO with a warning."""
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    monkeypatch.setenv("RELAY_LOG_LEVEL", "warning")
    configure_logging(stream=io.StringIO())
    assert logging.getLogger().level == logging.WARNING
    stream = io.StringIO()
    monkeypatch.setenv("RELAY_LOG_LEVEL", "chatty")
    configure_logging(stream=stream)
    assert logging.getLogger().level == logging.INFO
    assert "is not a log level" in stream.getvalue()
