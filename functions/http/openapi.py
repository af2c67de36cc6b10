"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

Built from pydantic models on the first request and cached (nothing here runs at import):
the answers and refusals from ``functions/http/schemas.py``, and each served saga's input
model as the request body of its own path, ``POST /v1/sagas/<name>/runs``, beside the
templated ``/v1/sagas/{name}/runs`` (OpenAPI matches concrete paths first), so a client
generator or a fuzzer (``tests/fuzz``) sends each saga the input it expects. Only the route
groups the app serves are described, with how each is authenticated (issue 10).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from pydantic import BaseModel

    from core.domain.saga import Saga
    from core.engine.engine import Engine

OPENAPI_PATH: Final = "/openapi.json"
# The route groups of functions/http/app.py (PUBLIC_API, WORKER, ADMIN), spelled here because
# app.py imports this module; tests/fuzz/test_openapi_document.py checks they still match.
PUBLIC_API: Final = "api"
WORKER: Final = "worker"
ADMIN: Final = "admin"

_ERRORS: Final[Mapping[int, str]] = {
    400: "malformed request: JSON, a header (named in `header`) or the body's shape",
    401: "no credentials; `WWW-Authenticate` says what to present",
    403: "credentials that do not check out, or without the grant for this saga",
    404: "no such saga, run or schedule (a run the caller may not read is not found)",
    409: "the idempotency key names a run with other input, or the run's status forbids it",
    413: "request body too large",
    415: "the body is not `application/json`",
    422: (
        "the input (or a query parameter) fails validation (`detail` lists the fields), the "
        "input is larger than a run keeps (`input_too_large`), or a store refuses the run "
        "(`request_rejected`)"
    ),
    503: "unavailable or misconfigured: retry after `Retry-After` seconds",
}
_SIGNATURE_HELP: Final = (
    "Local deliveries and operator actions (relay dev): `t=<unix seconds>,n=<nonce>,"
    "v2=<hex HMAC-SHA256>` over `v2\\n<METHOD>\\n<path with query>\\n<t>\\n<n>\\n<body>` "
    "with the data dir's signing key. Valid 60 s into the past and 5 s into the future; "
    "each signature is accepted once (nonce cache)."
)
_SECURITY_SCHEMES: Final[Mapping[str, Mapping[str, str]]] = {
    "relaySignature": {"type": "apiKey", "in": "header", "name": "X-Relay-Signature",
                       "description": _SIGNATURE_HELP},
    "googleOidc": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "GCP: a Google-signed ID token of the service account "
                   "Cloud Tasks, Pub/Sub push and Cloud Scheduler deliver as "
                   "(RELAY_TASKS_SERVICE_ACCOUNT), for RELAY_TASKS_AUDIENCE."},
    "callerJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                  "description": "A JWT of RELAY_JWT_ISSUER for RELAY_JWT_AUDIENCE; the "
                  "sagas it may start and read come from its RELAY_JWT_GRANTS_CLAIM claim "
                  "(RELAY_API_AUTH=jwt)."},
    "relayApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "rk_<key_id>_<secret>",
                    "description": "An API key from `relay keys create --grant "
                    "saga:start,read` (RELAY_API_AUTH=api_key), as a bearer token."},
    "relayApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                          "description": "The same API key in its own header."},
}  # fmt: skip
# Either credential may call the run API. Where the platform authenticates the caller
# (Cloud Run IAM, an API Gateway authorizer), `relay dev` on loopback or RELAY_API_AUTH=public,
# the app asks for none: see the README's Security section.
_RUN_API_SECURITY: Final[list[dict[str, list[str]]]] = [
    {"callerJwt": []},
    {"relayApiKey": []},
    {"relayApiKeyHeader": []},
]
_DELIVERY_SECURITY: Final[list[dict[str, list[str]]]] = [{"relaySignature": []}, {"googleOidc": []}]


class OpenApiEndpoint:
    """``GET /openapi.json``: the document for the served sagas and route groups, built once.

    The document names every saga and its input schema, so only a run API caller may read
    it: ``authenticate`` admits the request as the run API would (no grant needed), and an
    open ``relay dev`` on loopback serves it to anyone.

    Args:
        engine: Returns the engine, whose registry names the served sagas; called on the
            first request only (in a worker thread: it imports every saga module).
        include: The route groups the app serves (``functions.http.app.ALL_ROUTES``).
        authenticate: Raises ``HttpError`` 401/403 unless the request's caller checks out.
    """

    def __init__(
        self,
        *,
        engine: Callable[[], Engine],
        include: Iterable[str],
        authenticate: Callable[[Request], Awaitable[object]],
    ) -> None:
        self._engine = engine
        self._include = frozenset(include)
        self._authenticate = authenticate
        self._document: dict[str, Any] | None = None
        self._lock = threading.Lock()

    async def serve(self, request: Request) -> Response:
        """The endpoint: answer the cached document to an authenticated caller."""
        await self._authenticate(request)
        return JSONResponse(await run_in_threadpool(self.document))

    def document(self) -> dict[str, Any]:
        """The document, built on the first call (a saga that does not import raises)."""
        with self._lock:
            if self._document is None:
                sagas = self._engine().registry.loaded()
                self._document = build_document(sagas, include=self._include)
            return self._document


def build_document(sagas: Iterable[Saga], *, include: Iterable[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app serving ``sagas`` and the route groups ``include``."""
    from functions.http import schemas

    groups = frozenset(include)
    served = sorted(sagas, key=lambda saga: saga.name)
    refs = _Refs(served)
    paths: dict[str, Any] = {
        "/healthz": {"get": _operation("health", "liveness", {"200": _ok("alive", schemas.Health)},
                                       refs, security=[])},
    }  # fmt: skip
    if PUBLIC_API in groups:
        paths[OPENAPI_PATH] = {"get": _operation(
            "openapi", "this document (run API callers)", {"200": _ok("OpenAPI 3.1", None)},
            refs, errors=(401, 403), security=_RUN_API_SECURITY,
        )}  # fmt: skip
        for saga in served:
            paths[f"/v1/sagas/{saga.name}/runs"] = {"post": _start(refs, saga)}
        paths["/v1/sagas/{name}/runs"] = {"post": _start(refs, None)}
        paths.update(_run_api(refs))
    if WORKER in groups:
        schedules = sorted(item.name for saga in served for item in saga.schedules)
        paths.update(_deliveries(refs, schedules))
    if ADMIN in groups:
        paths.update(_operator_actions(refs))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Relay",
            "version": _version(),
            "description": "Start and read saga runs; deliveries from queues, events and "
            'schedulers. Errors are `{"error": code, "message": text, ...}`. Bodies are '
            "strict JSON (`application/json`): no NaN or Infinity, no repeated key, at most 64 "
            "levels deep, integers within 64 bits.",
        },
        "paths": paths,
        "components": {
            "schemas": refs.components,
            "securitySchemes": {name: dict(scheme) for name, scheme in _SECURITY_SCHEMES.items()},
        },
    }


class _Refs:
    """``$ref``s to the models' schemas, all generated at once so names never collide."""

    def __init__(self, sagas: Iterable[Saga]) -> None:
        from pydantic.json_schema import models_json_schema

        from functions.http import schemas

        entries: list[tuple[type[BaseModel], Any]] = [
            *((model, "serialization") for model in schemas.RESPONSE_MODELS),
            *((model, "validation") for model in schemas.REQUEST_MODELS),
            *((s.input_model, "validation") for s in sagas if s.input_model is not None),
        ]
        keys, top = models_json_schema(entries, ref_template="#/components/schemas/{model}")
        self._keys = keys
        self.components: dict[str, Any] = dict(top.get("$defs", {}))

    def answer(self, model: type[BaseModel]) -> dict[str, Any]:
        """The schema of ``model`` as sent (serialization mode)."""
        return dict(self._keys[(model, "serialization")])

    def body(self, model: type[BaseModel]) -> dict[str, Any]:
        """The schema of ``model`` as accepted (validation mode)."""
        return dict(self._keys[(model, "validation")])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relay")
    except PackageNotFoundError:  # deployed from sources, not installed
        return "0"


def _json(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema) if schema is not None else {}}}


def _ok(description: str, model: type[BaseModel] | None, **headers: str) -> dict[str, Any]:
    """A success answer; the ``$ref`` is filled in by ``_operation`` (it holds the refs)."""
    return {"description": description, "model": model, "headers": headers}


def _operation(
    operation_id: str,
    summary: str,
    answers: Mapping[str, Mapping[str, Any]],
    refs: _Refs,
    *,
    errors: Iterable[int] = (),
    security: list[dict[str, list[str]]],
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from functions.http.schemas import ErrorBody

    responses: dict[str, Any] = {}
    for status, answer in answers.items():
        model = answer.get("model")
        schema = answer.get("schema") or (refs.answer(model) if model is not None else None)
        responses[status] = {"description": answer["description"], "content": _json(schema)}
        if answer.get("headers"):
            responses[status]["headers"] = _headers(answer["headers"])
    for code in sorted(errors):
        responses.setdefault(str(code), {"description": _ERRORS[code]})
        responses[str(code)].setdefault("content", _json(refs.answer(ErrorBody)))
        if code == 401:
            responses["401"]["headers"] = _headers({"WWW-Authenticate": "what to present"})
        if code == 503:
            responses["503"]["headers"] = _headers({"Retry-After": "seconds (at least 1)"})
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "security": security,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def _headers(headers: Mapping[str, str]) -> dict[str, Any]:
    return {
        name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
    }


def _body(schema: Mapping[str, Any], *, is_required: bool) -> dict[str, Any]:
    return {"required": is_required, "content": _json(schema)}


def _start(refs: _Refs, saga: Saga | None) -> dict[str, Any]:
    """``POST /v1/sagas/<name>/runs`` for one saga, or the templated path when None."""
    from core.domain.run_ids import MAX_CLIENT_KEY_LENGTH
    from functions.http.schemas import StartedRun, any_json

    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "the same key returns the same run (printable ASCII)",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CLIENT_KEY_LENGTH,
            # No leading or trailing blank: HTTP strips them from header values.
            "pattern": r"^[!-~]([ -~]*[!-~])?$",
        },
    }
    parameters = [key]
    if saga is None:
        name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        parameters.insert(0, name)
        input_schema: Mapping[str, Any] = any_json()
        operation_id, summary = "startRun", "start a run of the saga named in the path"
    else:
        model = saga.input_model
        input_schema = refs.body(model) if model is not None else any_json()
        operation_id = "startRun_" + re.sub(r"[^A-Za-z0-9_]", "_", saga.name)
        summary = saga.description or f"start a run of {saga.name}"
    started = _ok(
        "the run, new or found by its key", StartedRun, Location="the run: /v1/runs/<run_id>"
    )
    return _operation(
        operation_id,
        summary,
        {"202": started},
        refs,
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
        security=_RUN_API_SECURITY,
        parameters=parameters,
        body=_body(input_schema, is_required=True),
    )


def _run_api(refs: _Refs) -> dict[str, Any]:
    from core.domain.status import RunStatus
    from functions.http.schemas import RunList, RunView

    statuses = [status.value for status in RunStatus]
    query = [
        {"name": "saga", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "status",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": True,
            "description": "repeat it, or separate statuses with commas",
            "schema": {"type": "array", "items": {"type": "string", "enum": statuses}},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
        },
    ]
    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/runs": {"get": _operation(
            "listRuns", "runs of the sagas the caller may read, newest first",
            {"200": _ok("run headers", RunList)}, refs,
            errors=(400, 401, 403, 422, 503), security=_RUN_API_SECURITY, parameters=query,
        )},
        "/v1/runs/{run_id}": {"get": _operation(
            "getRun", "a run with its steps (readers of its saga only)",
            {"200": _ok("the run", RunView)}, refs,
            errors=(400, 401, 403, 404, 503), security=_RUN_API_SECURITY, parameters=[run_id],
        )},
    }  # fmt: skip


def _deliveries(refs: _Refs, schedules: Iterable[str]) -> dict[str, Any]:
    from functions.http import schemas

    errors = (400, 401, 403, 413, 415, 422, 503)
    step_answers = {
        "200": _ok("acknowledged", schemas.StepDone),
        "503": {"description": "redeliver later (or the store is busy)",
                "schema": {"anyOf": [refs.answer(schemas.StepRetry),
                                     refs.answer(schemas.ErrorBody)]},
                "headers": {"Retry-After": "seconds (at least 1)"}},
    }  # fmt: skip
    event_body = {"anyOf": [refs.body(schemas.RelayEvent), refs.body(schemas.PubSubPush)]}
    schedule_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    schedule_time = {
        "name": "X-CloudScheduler-ScheduleTime",
        "in": "header",
        "required": False,
        "description": "the scheduled time when the body names none (Cloud Scheduler)",
        "schema": {"type": "string", "format": "date-time"},
    }
    fire = {
        f"/v1/schedules/{name}": {"post": _operation(
            "fireSchedule_" + re.sub(r"[^A-Za-z0-9_]", "_", name),
            f"start the run of one scheduled time of {name} (idempotent per time)",
            {"202": _ok("the run of that time", schemas.StartedRun)}, refs,
            errors=(*errors, 409), security=_DELIVERY_SECURITY, parameters=[schedule_time],
            body=_body(refs.body(schemas.ScheduleFire), is_required=False),
        )}
        for name in schedules
    }  # fmt: skip
    return fire | {
        "/v1/steps": {"post": _operation(
            "deliverStep", "one queue delivery (Cloud Tasks, the local dispatcher)",
            step_answers, refs, errors=errors, security=_DELIVERY_SECURITY,
            body=_body(refs.body(schemas.StepMessage), is_required=True),
        )},
        "/v1/events": {"post": _operation(
            "deliverEvent", "an event: a Relay event or a Pub/Sub push envelope",
            {"202": _ok("published", schemas.EventAccepted),
             "200": _ok("dead-lettered (never processable)", schemas.EventDeadLettered)},
            refs, errors=errors, security=_DELIVERY_SECURITY,
            body=_body(event_body, is_required=True),
        )},
        "/v1/schedules/{name}": {"post": _operation(
            "fireSchedule", "start the run of one scheduled time (idempotent per time)",
            {"202": _ok("the run of that time", schemas.StartedRun)}, refs,
            errors=(*errors, 404, 409), security=_DELIVERY_SECURITY,
            parameters=[schedule_name, schedule_time],
            body=_body(refs.body(schemas.ScheduleFire), is_required=False),
        )},
        "/v1/sweep": {"post": _operation(
            "sweep", "re-send overdue messages of stalled runs (a scheduler job)",
            {"200": _ok("what the sweep did", schemas.SweepReport)}, refs,
            errors=errors, security=_DELIVERY_SECURITY,
            body=_body(refs.body(schemas.SweepRequest), is_required=False),
        )},
    }  # fmt: skip


def _operator_actions(refs: _Refs) -> dict[str, Any]:
    from functions.http.schemas import RunView

    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    errors = (400, 401, 403, 404, 409, 413, 415, 503)
    return {
        f"/v1/runs/{{run_id}}/{action}": {"post": _operation(
            f"{action}Run", summary, {"200": _ok("the run afterwards", RunView)}, refs,
            errors=errors, security=_DELIVERY_SECURITY, parameters=[run_id],
        )}
        for action, summary in (
            ("retry", "resume a FAILED run with fresh retry budgets (audited)"),
            ("cancel", "undo finished steps, then end CANCELLED (audited)"),
        )
    }  # fmt: skip
