"""The bundle manifest: what Terraform deploys, derived from the code instead of restated.

``relay manifest`` prints it. Terraform reads it to create one function per target, one
queue per saga queue, one scheduler job per schedule and one subscription per event
pattern, so a saga added in Python needs no hand-written infrastructure. The output must
be stable (same code, same bytes): every list is sorted or in definition order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.domain.retry_policy import RetryPolicy
from core.domain.saga import Saga, StepDefinition
from core.registry import SagaRegistry

MANIFEST_VERSION: Final = 1
"""Bumped when a consumer (Terraform) must change to read the manifest."""


@dataclass(frozen=True, slots=True)
class FunctionTarget:
    """One deployable function: a functions-framework target and the routes it serves."""

    name: str
    entry_point: str
    route_groups: frozenset[str]
    description: str


def function_targets() -> tuple[FunctionTarget, ...]:
    """The function targets of ``functions/gcp.py``, by the route groups each serves.

    Imported lazily: the manifest is built by the CLI and tests, never by a function.
    """
    from functions.app import ADMIN, PUBLIC_API, WORKER

    return (
        FunctionTarget(
            "api",
            "functions/gcp.py:api",
            frozenset({PUBLIC_API}),
            "public run API: start, read and list runs",
        ),
        FunctionTarget(
            "relay",
            "functions/gcp.py:relay",
            frozenset({PUBLIC_API, WORKER, ADMIN}),
            "every route in one function (small deployments)",
        ),
        FunctionTarget(
            "worker",
            "functions/gcp.py:worker",
            frozenset({WORKER, ADMIN}),
            "queue, event and scheduler deliveries; manual retry and cancel",
        ),
    )


def build_manifest(registry: SagaRegistry) -> dict[str, Any]:
    """Describe every function target, saga, queue, schedule and event subscription.

    Args:
        registry: The sagas of the bundle; every module is imported to read them.

    Returns:
        A JSON-ready dict with ``"version": 1``; ``json.dumps(..., sort_keys=True)`` of it
        is byte-stable for the same code.
    """
    sagas = registry.loaded()
    step_names = sorted(f"{saga.name}.{step}" for saga in sagas for step in saga.steps)
    return {
        "version": MANIFEST_VERSION,
        "functions": [_target_entry(target, step_names) for target in function_targets()],
        "sagas": [_saga_entry(saga) for saga in sagas],
        "tasks": [],  # task DAGs join the manifest when they ship
        "queues": _queues(sagas),
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
        "events": sorted(
            [
                *(
                    {"pattern": trigger.pattern, "saga": saga.name, "starts": True}
                    for saga in sagas
                    for trigger in saga.event_triggers
                ),
                *(
                    {"pattern": step.wait.topic, "saga": saga.name, "resumes": step.name}
                    for saga in sagas
                    for step in saga.event_waits
                    if step.wait is not None
                ),
            ],
            key=lambda entry: (entry["pattern"], entry["saga"], str(entry.get("resumes", ""))),
        ),
    }


def _target_entry(target: FunctionTarget, step_names: list[str]) -> dict[str, Any]:
    from functions.app import WORKER

    return {
        "name": target.name,
        "entry_point": target.entry_point,
        "description": target.description,
        "route_groups": sorted(target.route_groups),
        "routes": _routes(target.route_groups),
        # A worker serves every step by default; RELAY_SAGAS narrows it at deploy time.
        "steps": step_names if WORKER in target.route_groups else [],
    }


def _routes(groups: frozenset[str]) -> list[dict[str, Any]]:
    """The routes ``create_app`` mounts for ``groups``, read from the app itself."""
    from starlette.routing import Route

    from functions.app import create_app

    app = create_app(engine=_no_engine, verifier=_NoVerifier(), include=groups)
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

    def verify(self, request_body: bytes, headers: Mapping[str, str]) -> None:
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
    by_queue: dict[str, list[str]] = {}
    for saga in sagas:
        by_queue.setdefault(saga.queue, []).append(saga.name)
    return [{"name": name, "sagas": sorted(names)} for name, names in sorted(by_queue.items())]
