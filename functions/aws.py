"""The Lambda entry point: one ``handler`` that routes each invocation by its event shape.

Mangum only understands HTTP events, so SQS batches, EventBridge Scheduler invocations,
EventBridge events and SNS notifications are recognised and dispatched first; whatever
is HTTP goes through Mangum around Relay's routed app (DESIGN.md, "One app, three
hosts"). Each shape has a parser class with ``infer(event) -> bool`` (``functions/aws_events.py``),
tried in order::

    shape (parser)        recognised by                                handled by
    SQS batch             Records[0].eventSource == "aws:sqs"          _handle_sqs_batch
    scheduler invocation  {"relay": "schedule", "schedule": ...}       _handle_schedule
    sweeper invocation    {"relay": "sweep"}                           _handle_sweep
    EventBridge event     detail-type + source + detail + id           _handle_topic_event
    SNS notification      Records[0].EventSource == "aws:sns"          _handle_topic_event
    HTTP                  requestContext (API Gateway v1/v2, Function  Mangum
                          URL) or ALB's requestContext.elb

On Lambda the HTTP surface is the public API only (start, read, list runs) plus
``/healthz``: SQS invokes this handler directly with step messages, and the scheduler
and event sources invoke it directly too, so ``/v1/steps``, ``/v1/events`` and
``/v1/schedules`` are not served over HTTP (nor retry/cancel, which need the worker's
delivery authentication). Importing this module builds no engine, imports neither
boto3 nor Mangum nor Starlette; the first invocation that needs them does.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from core.domain.errors_text import Redactor, describe_exception
from core.domain.records import Message
from core.errors import ConcurrencyConflict, EngineError, InfrastructureError, RequestRejected
from functions.aws_events import (
    SHAPES,
    Event,
    EventBridgeEvent,
    HttpRequest,
    SchedulerInvocation,
    SnsNotification,
    SqsBatch,
    SweepInvocation,
    TopicEvent,
    UnknownEventShapeError,
    parse_step_message,
)
from functions.logs import bind_request, configure_logging, reset_request

if TYPE_CHECKING:
    from mangum import Mangum

    from core.engine.engine import Engine
    from infra.aws.sqs import SqsTaskQueue

log = logging.getLogger("relay.aws")

MAX_VISIBILITY_SECONDS: Final = 12 * 3600
"""SQS's limit on a message's visibility timeout: the longest a record can be held back."""


# -- the entry point ------------------------------------------------------------------


def handler(event: Event, context: Any) -> Any:
    """The Lambda entry point: dispatch ``event`` to the handler of its shape.

    Raises:
        UnknownEventShapeError: the event is none of the shapes in the module docstring.
        InfrastructureError: a scheduler or event invocation could not reach the store
            (Lambda retries asynchronous invocations).
    """
    _configure_logging_once()
    token = bind_request(aws_request_id=getattr(context, "aws_request_id", None))
    try:
        return _dispatch(event, context)
    finally:
        reset_request(token)


def _dispatch(event: Event, context: Any) -> Any:
    """Route ``event`` by shape (see the module docstring)."""
    if not _is_warm and any(shape.infer(event) for shape in SHAPES):
        _warm_up(is_http=HttpRequest.infer(event))
    if SqsBatch.infer(event):
        return _handle_sqs_batch(event)
    if SchedulerInvocation.infer(event):
        return _handle_schedule(event)
    if SweepInvocation.infer(event):
        return _handle_sweep(event)
    if EventBridgeEvent.infer(event):
        return _handle_topic_event(EventBridgeEvent.parse(event))
    if SnsNotification.infer(event):
        return _handle_topic_event(SnsNotification.parse(event))
    if HttpRequest.infer(event):
        return _http_handler()(dict(event), context)
    keys = sorted(str(key) for key in event) if isinstance(event, Mapping) else []
    raise UnknownEventShapeError(keys=keys, tried=[shape.name for shape in SHAPES])


_is_warm = False


def _warm_up(*, is_http: bool) -> None:
    """Build the engine (and the HTTP app) with the collector off, then freeze them.

    A cold container imports the engine, boto3 and Starlette and builds clients: many
    long-lived objects, during which the cyclic collector runs again and again and frees
    nothing (about 8% of the cold start, ``bench/aws_cold_start.py``). ``gc.freeze()``
    then moves them to the permanent generation, so later collections skip them too.
    Only the build runs with the collector off, never the user's steps.
    """
    global _is_warm
    _is_warm = True
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _engine()
        if is_http:
            _http_handler()
    except EngineError as exc:  # raised again, under its own policy, by the dispatch
        log.warning("warm-up could not build the engine: %s", exc)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


@functools.cache
def _configure_logging_once() -> None:
    """JSON logs on the first invocation, not at import (importing stays side-effect free)."""
    configure_logging()


def _engine() -> Engine:
    from functions.wiring import get_engine

    return get_engine()


# -- SQS: one step message per record, partial batch response -------------------------


def _handle_sqs_batch(event: Event) -> dict[str, list[dict[str, str]]]:
    """Process every record on its own; report the ones SQS must deliver again.

    Every record is isolated (issue 10, finding 5): whatever one record does (a body of
    deeply nested ``[`` that overflows the parser, bad JSON, JSON of the wrong shape, an
    engine error, a bug of ours) is caught at that record, reported for that record
    alone, and the rest of the batch is processed and acknowledged as usual.

    A record is acknowledged (left out of ``batchItemFailures``) when it is done. It is
    reported when the engine asks for a later delivery (its visibility is set to that
    delay first, so SQS redelivers after the delay, not at once), when it is not due yet
    (``not_before`` ahead), on an infrastructure error or a bug of ours, and when it is
    poison: a body that is not a step message, or one the engine rejects for good.

    Poison is *reported*, not acknowledged: it is logged with its id, size and reason
    (never its body) and left to the queue's redrive policy, which moves it to the
    dead-letter queue after ``maxReceiveCount`` receives (``terraform/modules/aws/
    queues.tf``): kept for inspection, never silently dropped. The one exception is a
    record with no usable ``messageId`` (only a hand-made event can lack one): it cannot
    be named in ``batchItemFailures`` (an identifier Lambda does not know fails the
    whole batch), so it is acknowledged and logged as dropped.
    """
    records = event.get("Records")
    failures: list[dict[str, str]] = []
    reported: set[str] = set()
    for index, record in enumerate(records if isinstance(records, list) else []):
        if _process_record_isolated(record):
            continue
        item = _item_identifier(record)
        if item is None:
            log.error(
                "SQS record #%d has no messageId, so it cannot be reported for redelivery; "
                "dropped (acknowledged)",
                index,
                extra={"sqs_record_index": index},
            )
        elif item not in reported:
            reported.add(item)
            failures.append({"itemIdentifier": item})
    return {"batchItemFailures": failures}


def _item_identifier(record: object) -> str | None:
    """The record's ``messageId`` when it can name the record in ``batchItemFailures``."""
    if not isinstance(record, Mapping):
        return None
    message_id = record.get("messageId")
    return message_id if isinstance(message_id, str) and message_id else None


def _process_record_isolated(record: object) -> bool:
    """``_process_record``, with any failure of this one record caught and logged."""
    try:
        if not isinstance(record, Mapping):
            raise TypeError(f"an SQS record must be an object, not {type(record).__name__}")
        return _process_record(record)
    except Exception as exc:  # one record, whatever it does, must not fail its batch
        log.error(
            "SQS record %s failed (%s); reported for redelivery",
            _clip(str(_item_identifier(record))),
            _clip(Redactor().redact(describe_exception(exc).detail)),
            exc_info=not isinstance(exc, RecursionError | MemoryError),
            extra={"sqs_message_id": _item_identifier(record)},
        )
        return False


def _process_record(record: Mapping[str, Any]) -> bool:
    """True when the record may be deleted, False when SQS must deliver it again."""
    message_id = record.get("messageId")
    message = _parse_record(record)
    if message is None:
        return False
    context = {"run_id": message.run_id, "step": message.step, "sqs_message_id": message_id}
    ahead = 0.0 if message.not_before is None else message.not_before - time.time()
    if ahead > 0:
        _hold_back(record, ahead)
        return False
    try:
        result = _engine().handle(message)
    except (InfrastructureError, ConcurrencyConflict) as exc:
        log.warning("step message deferred: %s", exc, extra=context)
        return False
    except EngineError as exc:
        if exc.retryable:
            log.warning("step message deferred: %s", exc, extra=context)
            return False
        log.error(
            "poison step message reported for the dead-letter queue (permanent error): %s",
            exc,
            extra=context,
        )
        return False
    except Exception:
        log.exception("step message failed; SQS will deliver it again", extra=context)
        return False
    if result.is_done:
        return True
    _hold_back(record, result.retry_after_seconds)
    return False


def _parse_record(record: Mapping[str, Any]) -> Message | None:
    """The step message in a record's body; None (logged, body left out) when it is poison."""
    body = record.get("body", "")
    try:
        return parse_step_message(body)
    except json.JSONDecodeError as exc:
        reason = f"not JSON ({exc.msg} at character {exc.pos})"
    except RecursionError:
        reason = "not a step message (nested too deeply to parse)"
    except (ValueError, TypeError) as exc:  # JSON, but not a step message
        reason = f"not a step message ({_clip(Redactor().redact(str(exc)))})"
    size = len(body.encode("utf-8", "surrogatepass")) if isinstance(body, str) else 0
    log.error(
        "poison SQS message %s (%d bytes) reported for the dead-letter queue: %s",
        _item_identifier(record),
        size,
        reason,
        extra={"sqs_message_id": _item_identifier(record), "size_bytes": size, "reason": reason},
    )
    return None


def _clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters: a parse error may quote part of the body."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hold_back(record: Mapping[str, Any], delay_seconds: float) -> None:
    """Hide a reported record for ``delay_seconds`` (ChangeMessageVisibility); log failures.

    Lambda leaves a reported record in the queue with the visibility it has; without
    this it would come back after the queue's whole visibility timeout, not the delay.
    """
    from functions.wiring import get_settings

    url = get_settings().sqs_queue_url
    if not url:
        log.warning("RELAY_SQS_QUEUE_URL is unset; a deferred SQS message returns after its lease")
        return
    queue = _visibility_queue(url)
    # SqsTaskQueue receipts are "<SQS message id>|<receipt handle>".
    receipt = f"{record['messageId']}|{record['receiptHandle']}"
    try:
        queue.release(receipt=receipt, delay_seconds=min(delay_seconds, MAX_VISIBILITY_SECONDS))
    except EngineError as exc:  # the record is reported anyway; it returns after its lease
        log.warning("could not delay SQS message %s: %s", record.get("messageId"), exc)


@functools.cache
def _visibility_queue(url: str) -> SqsTaskQueue:
    """The SQS queue at ``url``, for visibility changes (one per warm container).

    Its own queue object tracks no receipts: the process-local fencing of stale
    receipts is for pollers and would ignore a second hold-back of the same message.
    """
    from infra.aws._boto import new_client
    from infra.aws.sqs import SqsTaskQueue

    # The engine's shared boto3 session: a second session would cost ~50 ms to build.
    return SqsTaskQueue(new_client("sqs"), queue_url=url, tracked_receipts=0)


# -- scheduler and events -------------------------------------------------------------


def _handle_schedule(event: Event) -> dict[str, Any]:
    """Start the run of one scheduled time; its id derives from schedule and time."""
    from core.engine.triggers import UnknownScheduleError

    try:
        name, scheduled_at = SchedulerInvocation.parse(event)
    except ValueError as exc:
        log.error("scheduler invocation ignored: %s", exc)
        return {"status": "rejected", "error": str(exc)}
    try:
        result = _engine().triggers.fire_schedule(name=name, scheduled_at=scheduled_at)
    except (UnknownScheduleError, RequestRejected) as exc:  # retrying cannot help
        log.error("scheduler invocation ignored: %s", exc)
        return {"status": "rejected", "error": str(exc)}
    run = result.run
    return {"run_id": run.run_id, "status": run.status.value, "created": result.is_created}


def _handle_sweep(event: Event) -> dict[str, Any]:
    """Re-send the overdue messages of stalled runs (the sweeper schedule, every minute).

    The sweeper's work per invocation is bounded and each run backs off between
    re-drives (``core/engine/sweeper.py``), so a slow queue does not get more messages.
    """
    from core.engine.sweeper import DEFAULT_SWEEP_STALE_SECONDS

    try:
        stale = SweepInvocation.parse(event, DEFAULT_SWEEP_STALE_SECONDS)
    except ValueError as exc:
        log.error("sweeper invocation ignored: %s", exc)
        return {"status": "rejected", "error": str(exc)}
    return _engine().sweeper.sweep(stale_after_seconds=stale).to_json()


def _handle_topic_event(events: list[TopicEvent]) -> dict[str, Any]:
    """Start subscribed sagas and resume runs waiting for each event (idempotent by id)."""
    runs: list[str] = []
    resumed: list[str] = []
    rejected: dict[str, str] = {}
    for item in events:
        try:
            outcome = _engine().triggers.publish(
                topic=item.topic, data=item.data, event_id=item.event_id
            )
        except (ValueError, RequestRejected) as exc:  # malformed, or refused: retrying cannot help
            log.error("event %r ignored: %s", item.event_id, exc)
            rejected[item.event_id or "?"] = str(exc)
            continue
        runs += [started.run.run_id for started in outcome.started]
        resumed += outcome.resumed
        rejected.update(outcome.rejected)
    return {"runs": runs, "resumed": resumed, "rejected": rejected}


# -- HTTP -----------------------------------------------------------------------------


class _NoDeliveries:
    """The verifier of an app that serves no authenticated route: refuses everything."""

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        from functions.http.auth import Forbidden

        raise Forbidden("deliveries are not served over HTTP on Lambda")


@functools.cache
def _http_handler() -> Mangum:
    """Mangum around the public API (built on the first HTTP invocation)."""
    from mangum import Mangum

    from functions.http.app import PUBLIC_API, create_app
    from functions.http.callers import LazyAuthenticator
    from functions.wiring import get_authenticator

    app = create_app(
        engine=_engine,
        verifier=_NoDeliveries(),
        # Settings are read (a bad RELAY_API_AUTH answered 503) on a request, not here.
        authenticator=LazyAuthenticator(get_authenticator),
        include=frozenset({PUBLIC_API}),
    )
    return Mangum(app, lifespan="off")
