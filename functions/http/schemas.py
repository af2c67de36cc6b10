"""Pydantic models of the HTTP API's bodies, for the OpenAPI document (``openapi.py``) only.

The handlers build their JSON by hand (``handlers.py``, ``views.py``, ``errors.py``); these
models describe what they send and accept, field for field, so schemathesis can check every
answer against them (``tests/fuzz``). Change a view and its model together. Imported only
when ``GET /openapi.json`` is first served: no handler needs them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from core.domain.status import Action, RunStatus, StepStatus

Timestamp = Annotated[datetime, Field(description="ISO-8601 UTC with milliseconds")]


class _Body(BaseModel):
    """Answers may gain fields (clients ignore unknown ones): extra keys stay allowed."""

    model_config = ConfigDict(extra="allow")


# -- run API ---------------------------------------------------------------------------


class StartedRun(_Body):
    """202 answer of a start (and of a scheduled invocation): the run, new or found."""

    run_id: str
    status: RunStatus
    created: bool = Field(description="false when the idempotency key found an existing run")


class RunHeader(_Body):
    """One entry of ``GET /v1/runs``: no input, output or error (those are for readers)."""

    run_id: str
    saga: str
    status: RunStatus
    created_at: Timestamp
    updated_at: Timestamp


class RunList(_Body):
    """``GET /v1/runs``: run headers, newest first."""

    runs: list[RunHeader]


class StepView(_Body):
    """One step of a run view; ``attempts`` counts the step's and its compensation's."""

    name: str
    status: StepStatus
    attempts: int
    execute_attempts: int
    compensation_attempts: int
    started_at: Timestamp | None
    finished_at: Timestamp | None
    error: str | None = Field(description="public, sanitised: '<code>: <message>'")
    error_detail: str | None = Field(description="the full text, secrets redacted (readers)")


class AuditEntry(_Body):
    """An operator action on a run (retry, cancel): who, from where, when."""

    action: str
    actor: str
    source: str
    at: Timestamp


class RunView(RunHeader):
    """``GET /v1/runs/{run_id}`` (and retry/cancel answers): the run with its steps.

    Only for callers who may read the saga (a run they may not read is a 404).
    """

    input: JsonValue
    output: JsonValue
    error: str | None = Field(description="public, sanitised: '<code>: <message>'")
    error_detail: str | None = Field(description="the full text, secrets redacted (readers)")
    compensation_reason: str | None
    audit: list[AuditEntry] = Field(description="operator actions (retry, cancel), oldest first")
    steps: list[StepView]


class Health(_Body):
    """``GET /healthz``: liveness only."""

    status: Literal["ok"]


# -- errors ----------------------------------------------------------------------------


class FieldError(_Body):
    """One bad field of a 422: where (``loc``), what (``msg``) and pydantic's ``type``."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(_Body):
    """Every refusal: ``{"error": code, "message": text, ...fields naming what is wrong}``."""

    error: str = Field(description="stable machine-readable code, e.g. 'invalid_input'")
    message: str
    header: str | None = Field(default=None, description="the request header at fault")
    parameter: str | None = Field(default=None, description="the query parameter at fault")
    detail: list[FieldError] | None = None
    run_id: str | None = None
    saga: str | None = None
    schedule: str | None = None
    status: str | None = None
    limit: int | None = None
    service: str | None = None
    retry_after_seconds: float | None = None


# -- deliveries --------------------------------------------------------------------------


class StepMessage(BaseModel):
    """``POST /v1/steps``: one queue message (``core.domain.messages.Message``, format 2)."""

    format: Literal[1, 2] = 2
    saga: str | None = Field(min_length=1, description="required (may be null) in format 2")
    run_id: str = Field(min_length=1)
    step: str = Field(min_length=1)
    action: Action
    attempt: int = Field(ge=0)
    not_before: float | None = None


class StepDone(_Body):
    """200: the delivery is acknowledged."""

    status: Literal["done"]
    detail: str


class StepRetry(_Body):
    """503: redeliver after ``retry_after_seconds`` (a live lease, a busy store)."""

    status: Literal["retry"]
    detail: str
    retry_after_seconds: float


class RelayEvent(BaseModel):
    """``POST /v1/events`` from the local bus: a topic, any JSON data, a unique id."""

    topic: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    data: JsonValue = None
    id: str = Field(min_length=1)


class PubSubMessage(BaseModel):
    """The message of a Pub/Sub push envelope (``data`` is base64 of JSON)."""

    data: str | None = None
    attributes: dict[str, str] | None = None
    messageId: str | None = None  # Pub/Sub spells them so
    publishTime: str | None = None


class PubSubPush(BaseModel):
    """``POST /v1/events`` from a Pub/Sub push subscription."""

    message: PubSubMessage
    subscription: str | None = None


class EventAccepted(_Body):
    """202: the runs the event started (or found), the runs it resumed, sagas that refused it."""

    runs: list[str]
    resumed: list[str]
    rejected: dict[str, str]


class EventDeadLettered(_Body):
    """200: a pushed message that can never be processed, acknowledged and logged."""

    status: Literal["dead_lettered"]
    message_id: str | None
    reason: str


class ScheduleFire(BaseModel):
    """``POST /v1/schedules/{name}`` (optional body): which scheduled time to start."""

    scheduled_time: datetime | None = None


class SweepRequest(BaseModel):
    """``POST /v1/sweep`` (optional body): how overdue a message must be to re-send it."""

    stale_after_seconds: float = Field(default=120.0, ge=0)


class SweepReport(_Body):
    """200: what one sweep did (``core.engine.sweeper.SweepReport.to_json``)."""

    redriven: int
    stale_after_seconds: float
    messages: int
    listed: int
    loaded: int
    backing_off: int
    raced: int
    is_truncated: bool


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    StartedRun,
    RunList,
    RunView,
    Health,
    ErrorBody,
    StepDone,
    StepRetry,
    EventAccepted,
    EventDeadLettered,
    SweepReport,
)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    StepMessage,
    RelayEvent,
    PubSubPush,
    ScheduleFire,
    SweepRequest,
)


def any_json() -> dict[str, Any]:
    """The schema of a body that may be any JSON document (a saga without an input model)."""
    return {"description": "any JSON document (the saga declares no input model)"}
