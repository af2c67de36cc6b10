"""The bundle manifest: what Terraform deploys, derived from the code instead of restated.

``relay manifest`` prints it. Terraform reads it to create one function per target, one
queue per saga queue, one scheduler job per schedule and one subscription per event
pattern, so a saga added in Python needs no hand-written infrastructure. The output must
be stable (same code, same bytes): every list is sorted or in definition order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from core.domain.queues import DEFAULT_QUEUE_SETTINGS, QueueSettings
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga, StepDefinition
from core.errors import DefinitionError
from core.registry import SagaRegistry
from functions.settings import deployment_env, fixed_config

MANIFEST_VERSION: Final = 2
"""Bumped when a consumer (Terraform) must change to read the manifest."""

PLATFORMS: Final = ("gcp", "aws")
API_GATEWAY_TIMEOUT_SECONDS: Final = 30
"""API Gateway's integration timeout caps the run API function's useful timeout."""
LAMBDA_MAX_TIMEOUT_SECONDS: Final = 900
GCP_HTTP_MAX_TIMEOUT_SECONDS: Final = 3600
GCP_EVENT_MAX_TIMEOUT_SECONDS: Final = 540
"""Event-driven (Eventarc) Cloud Run functions time out after at most 9 minutes."""
SWEEPER_CRON: Final = "* * * * *"
"""How often the scheduler calls ``POST /v1/sweep`` in a deployment."""
AWS_HANDLER: Final = "functions.aws.handler"
"""One Lambda handler routes every event shape (``functions/aws.py``)."""


@dataclass(frozen=True, slots=True)
class GcpTarget:
    """How a function runs on Cloud Run functions: its ``functions/gcp.py`` target."""

    entry_point: str
    trigger: Literal["http", "pubsub"]


@dataclass(frozen=True, slots=True)
class AwsTarget:
    """How a function runs on Lambda: the handler and what invokes it."""

    handler: str
    triggers: tuple[Literal["http_api", "sqs", "scheduler", "eventbridge"], ...]


@dataclass(frozen=True, slots=True)
class FunctionTarget:
    """One deployable function: the routes it serves and the resources it runs with.

    Attributes:
        name: Stable id (``api``, ``worker``, ``relay``, ``pubsub``); also the role that
            ``functions.settings.VARIABLES`` names.
        description: One line for people reading the manifest.
        route_groups: Route groups of ``functions/http/app.py`` its app mounts.
        is_public: Serves the run API, the routes callers outside the deployment use (the
            manifest's ``public``). Who may call it is the deployment's choice, never the
            manifest's: Terraform keeps it behind Cloud Run IAM / an API Gateway authorizer
            unless its ``public_api`` variable says otherwise (issue 10).
        is_deployed: Part of the default Terraform layout (the others are alternatives).
        memory_mb: Memory of one instance (on Lambda it also sets the CPU share).
        timeout_seconds: Longest one invocation may run.
        min_instances: Instances kept warm (0: nothing runs at rest).
        max_instances: Upper bound on instances.
        concurrency: Requests one Cloud Run instance serves at once (Lambda: always 1).
        gcp: The functions-framework target; None when it does not run on GCP.
        aws: The Lambda handler and triggers; None when it does not run on AWS.
    """

    name: str
    description: str
    route_groups: frozenset[str]
    is_public: bool
    is_deployed: bool
    memory_mb: int
    timeout_seconds: int
    gcp: GcpTarget | None
    aws: AwsTarget | None
    min_instances: int = 0
    max_instances: int = 100
    concurrency: int = 80

    def __post_init__(self) -> None:
        limits = [("Lambda", LAMBDA_MAX_TIMEOUT_SECONDS)] if self.aws else []
        if self.gcp is not None:
            gcp_max = (
                GCP_HTTP_MAX_TIMEOUT_SECONDS
                if self.gcp.trigger == "http"
                else GCP_EVENT_MAX_TIMEOUT_SECONDS
            )
            limits.append(("Cloud Run functions", gcp_max))
        if self.is_public and self.aws is not None:
            limits.append(("API Gateway", API_GATEWAY_TIMEOUT_SECONDS))
        for platform, limit in limits:
            if not 1 <= self.timeout_seconds <= limit:
                raise DefinitionError(
                    f"function {self.name!r}: timeout_seconds={self.timeout_seconds} is "
                    f"outside [1, {limit}] ({platform})"
                )
        if not 0 <= self.min_instances <= self.max_instances:
            raise DefinitionError(
                f"function {self.name!r}: min_instances={self.min_instances} must be in "
                f"[0, max_instances={self.max_instances}]"
            )


def function_targets() -> tuple[FunctionTarget, ...]:
    """The function targets of ``functions/gcp.py`` and ``functions/aws.py``, with settings.

    On AWS, ``api`` and ``worker`` are two Lambdas with the same handler (it routes each
    event by its shape); ``relay`` (every route in one function) and ``pubsub`` (an
    Eventarc target) exist on GCP only. Imported lazily: the manifest is built by the CLI
    and tests, never by a function.
    """
    from functions.http.app import ADMIN, PUBLIC_API, WORKER

    return (
        FunctionTarget(
            name="api",
            description="run API: start, read and list runs",
            route_groups=frozenset({PUBLIC_API}),
            is_public=True,
            is_deployed=True,
            memory_mb=512,
            timeout_seconds=30,
            gcp=GcpTarget(entry_point="api", trigger="http"),
            aws=AwsTarget(handler=AWS_HANDLER, triggers=("http_api",)),
        ),
        FunctionTarget(
            name="worker",
            description="queue, event and scheduler deliveries; manual retry and cancel",
            route_groups=frozenset({WORKER, ADMIN}),
            is_public=False,
            is_deployed=True,
            memory_mb=1024,
            timeout_seconds=900,
            gcp=GcpTarget(entry_point="worker", trigger="http"),
            aws=AwsTarget(handler=AWS_HANDLER, triggers=("eventbridge", "scheduler", "sqs")),
        ),
        FunctionTarget(
            name="relay",
            description="every route in one function (small deployments)",
            route_groups=frozenset({PUBLIC_API, WORKER, ADMIN}),
            # It serves the run API; its delivery routes authenticate in the app.
            is_public=True,
            is_deployed=False,
            memory_mb=1024,
            timeout_seconds=900,
            gcp=GcpTarget(entry_point="relay", trigger="http"),
            aws=None,
        ),
        FunctionTarget(
            name="pubsub",
            description="Eventarc Pub/Sub trigger: start or resume the runs an event reaches",
            route_groups=frozenset(),
            is_public=False,
            is_deployed=False,
            memory_mb=512,
            timeout_seconds=540,
            gcp=GcpTarget(entry_point="pubsub", trigger="pubsub"),
            aws=None,
        ),
    )


def build_manifest(registry: SagaRegistry) -> dict[str, Any]:
    """Describe every function target, saga, queue, schedule and event subscription.

    Args:
        registry: The sagas of the bundle; every module is imported to read them.

    Returns:
        A JSON-ready dict in the shape of ``docs/manifest.md`` (``"version": 2``);
        ``json.dumps(..., sort_keys=True)`` of it is byte-stable for the same code.

    Raises:
        DefinitionError: sagas sharing a queue declare different settings, or a queue's
            visibility timeout is shorter than the timeout of the worker SQS invokes.
    """
    sagas = registry.loaded()
    targets = function_targets()
    step_names = sorted(f"{saga.name}.{step}" for saga in sagas for step in saga.steps)
    queues = _queues(sagas)
    _check_visibility_timeouts(queues, targets)
    events = _events(sagas)
    return {
        "version": MANIFEST_VERSION,
        "functions": [_target_entry(target, step_names) for target in targets],
        "sagas": [_saga_entry(saga) for saga in sagas],
        "tasks": [],  # task DAGs join the manifest when they ship
        "queues": queues,
        "events": events,
        "topics": sorted({_topic_of(str(event["pattern"])) for event in events}),
        "schedules": sorted(
            (
                {
                    "name": item.name,
                    "cron": item.cron,
                    "timezone": item.timezone,
                    "saga": saga.name,
                    "input": item.input,
                    "description": item.description,
                }
                for saga in sagas
                for item in saga.schedules
            ),
            key=lambda entry: str(entry["name"]),
        ),
        "sweeper": _sweeper(),
        "config": {platform: fixed_config(platform) for platform in PLATFORMS},
    }


ALL_TOPICS: Final = "relay-all"
"""The topic of patterns whose first segment is a wildcard (they can match any topic)."""


def _topic_of(pattern: str) -> str:
    """One Pub/Sub topic / EventBridge rule prefix per first segment of a pattern."""
    first = pattern.split(".", 1)[0]
    return ALL_TOPICS if first in ("*", "**") else first


def _events(sagas: list[Saga]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [
        {"pattern": trigger.pattern, "saga": saga.name, "starts": True, "resumes": None}
        for saga in sagas
        for trigger in saga.event_triggers
    ]
    entries += [
        {"pattern": step.wait.topic, "saga": saga.name, "starts": False, "resumes": step.name}
        for saga in sagas
        for step in saga.event_waits
        if step.wait is not None and step.wait.topic is not None
    ]
    return sorted(entries, key=lambda e: (e["pattern"], e["saga"], e["resumes"] or ""))


def _sweeper() -> dict[str, Any]:
    from core.engine.sweeper import DEFAULT_SWEEP_STALE_SECONDS

    return {
        "cron": SWEEPER_CRON,
        "path": "/v1/sweep",
        "stale_after_seconds": int(DEFAULT_SWEEP_STALE_SECONDS),
    }


def _target_entry(target: FunctionTarget, step_names: list[str]) -> dict[str, Any]:
    from functions.http.app import WORKER

    return {
        "name": target.name,
        "description": target.description,
        "route_groups": sorted(target.route_groups),
        "routes": _routes(target.route_groups) if target.route_groups else [],
        # A worker serves every step by default; RELAY_SAGAS narrows it at deploy time.
        "steps": step_names if WORKER in target.route_groups else [],
        "public": target.is_public,
        "deploy": target.is_deployed,
        "memory_mb": target.memory_mb,
        "timeout_seconds": target.timeout_seconds,
        "min_instances": target.min_instances,
        "max_instances": target.max_instances,
        "concurrency": target.concurrency,
        "gcp": None
        if target.gcp is None
        else {"entry_point": target.gcp.entry_point, "trigger": target.gcp.trigger},
        "aws": None
        if target.aws is None
        else {"handler": target.aws.handler, "triggers": sorted(target.aws.triggers)},
        "env": {
            platform: deployment_env(platform=platform, role=target.name)
            if getattr(target, platform) is not None
            else []
            for platform in PLATFORMS
        },
    }


def _routes(groups: frozenset[str]) -> list[dict[str, Any]]:
    """The routes ``create_app`` mounts for ``groups``, read from the app itself."""
    from starlette.routing import Route

    from functions.http.app import create_app

    app = create_app(
        engine=_no_engine, verifier=_NoVerifier(), authenticator=_NoCallers(), include=groups
    )
    routes = [
        {"path": route.path, "methods": sorted((route.methods or set()) - {"HEAD"})}
        for route in app.routes
        if isinstance(route, Route)
    ]
    return sorted(routes, key=lambda r: (r["path"], r["methods"]))


def _no_engine() -> Any:
    raise AssertionError("the manifest lists routes; it never serves a request")


class _NoVerifier:
    """Stands in for the delivery verifier: listing routes authenticates nothing."""

    def verify(self, *, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> str:
        raise AssertionError("the manifest lists routes; it never serves a request")


class _NoCallers:
    """Stands in for the run API's authenticator: listing routes authenticates nobody."""

    def authenticate(self, request: Any) -> Any:
        raise AssertionError("the manifest lists routes; it never serves a request")


def _saga_entry(saga: Saga) -> dict[str, Any]:
    schema = saga.input_model.model_json_schema() if saga.input_model is not None else {}
    return {
        "name": saga.name,
        "description": saga.description,
        "definition_hash": saga.definition_hash,
        "queue": saga.queue,
        "input_schema": schema,
        "steps": [_step_entry(step) for step in saga.steps.values()],
        "invariants": len(saga.invariants),
    }


def _step_entry(step: StepDefinition) -> dict[str, Any]:
    compensation = step.compensation
    return {
        "name": step.name,
        "after": list(step.after),
        "timeout_seconds": step.timeout_seconds,
        "retry": _retry_entry(step.retry),
        "has_compensation": compensation is not None,
        "compensation": None
        if compensation is None
        else {
            "timeout_seconds": step.compensation_timeout_seconds,
            "retry": _retry_entry(compensation.retry),
        },
        "compensate_on_failure": step.compensate_on_failure,
        "kind": _kind(step),
        "wait": None
        if step.wait is None
        else {
            "sleep_seconds": step.wait.sleep_seconds,
            "topic": step.wait.topic,
            "timeout_seconds": None if step.wait.is_sleep else step.wait.timeout_seconds,
        },
    }


def _kind(step: StepDefinition) -> str:
    """``task`` runs code; ``sleep`` and ``event`` park the run until a deadline or an event."""
    if step.wait is None:
        return "task"
    return "sleep" if step.wait.is_sleep else "event"


def _retry_entry(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "max_attempts": policy.max_attempts,
        "initial_delay_seconds": policy.initial_delay_seconds,
        "backoff_factor": policy.backoff_factor,
        "max_delay_seconds": policy.max_delay_seconds,
        "jitter": policy.jitter,
        "non_retryable": list(policy.non_retryable),
    }


def _queues(sagas: list[Saga]) -> list[dict[str, Any]]:
    """One entry per queue name, with the settings its sagas declare (or the defaults)."""
    by_queue: dict[str, list[Saga]] = {}
    for saga in sagas:
        by_queue.setdefault(saga.queue, []).append(saga)
    return [
        {
            "name": name,
            "sagas": sorted(saga.name for saga in members),
            **_queue_settings_entry(_settings_of(name, members)),
        }
        for name, members in sorted(by_queue.items())
    ]


def _settings_of(queue: str, sagas: list[Saga]) -> QueueSettings:
    declared = {saga.name: saga.queue_settings for saga in sagas if saga.queue_settings}
    distinct = set(declared.values())
    if len(distinct) > 1:
        raise DefinitionError(
            f"sagas {', '.join(sorted(declared))} share queue {queue!r} but declare "
            "different queue_settings; declare the same settings (or one saga's only)"
        )
    return distinct.pop() if distinct else DEFAULT_QUEUE_SETTINGS


def _queue_settings_entry(settings: QueueSettings) -> dict[str, Any]:
    return {
        "max_dispatches_per_second": _number(settings.max_dispatches_per_second),
        "max_concurrent_dispatches": settings.max_concurrent_dispatches,
        "max_attempts": settings.max_attempts,
        "min_backoff_seconds": settings.min_backoff_seconds,
        "max_backoff_seconds": settings.max_backoff_seconds,
        "visibility_timeout_seconds": settings.visibility_timeout_seconds,
        "dlq_max_receive_count": settings.dlq_max_receive_count,
    }


def _number(value: float) -> float | int:
    """``value`` as an int when it is whole, so the JSON reads ``500``, not ``500.0``."""
    return int(value) if float(value).is_integer() else value


def _check_visibility_timeouts(
    queues: list[dict[str, Any]], targets: tuple[FunctionTarget, ...]
) -> None:
    """Refuse a queue that hides messages for less than the timeout of its SQS consumer.

    AWS refuses such an event source mapping; failing here names both, before
    ``terraform apply`` does.
    """
    sqs_timeouts = [
        (target.name, target.timeout_seconds)
        for target in targets
        if target.is_deployed and target.aws is not None and "sqs" in target.aws.triggers
    ]
    for queue in queues:
        for name, timeout in sqs_timeouts:
            if queue["visibility_timeout_seconds"] < timeout:
                raise DefinitionError(
                    f"queue {queue['name']!r}: visibility_timeout_seconds="
                    f"{queue['visibility_timeout_seconds']} is less than the timeout of "
                    f"function {name!r} ({timeout} s) that SQS invokes"
                )
