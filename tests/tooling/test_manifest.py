"""The version-2 bundle manifest (docs/manifest.md): shape, env from the settings table."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core import QueueSettings, Saga
from core.errors import DefinitionError
from core.registry import SagaRegistry
from functions import settings
from functions.bundle import SAGA_MODULES
from functions.settings import EMULATOR_VARIABLES, VARIABLES
from tooling.manifest import build_manifest, function_targets

ROOT = Path(__file__).resolve().parents[2]

FUNCTION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "description": str,
    "route_groups": list,
    "routes": list,
    "steps": list,
    "public": bool,
    "deploy": bool,
    "memory_mb": int,
    "timeout_seconds": int,
    "min_instances": int,
    "max_instances": int,
    "concurrency": int,
    "gcp": (dict, type(None)),
    "aws": (dict, type(None)),
    "env": dict,
}
QUEUE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "sagas": list,
    "max_dispatches_per_second": (int, float),
    "max_concurrent_dispatches": int,
    "max_attempts": int,
    "min_backoff_seconds": int,
    "max_backoff_seconds": int,
    "visibility_timeout_seconds": int,
    "dlq_max_receive_count": int,
}
TOP_LEVEL = {
    "version",
    "functions",
    "sagas",
    "tasks",
    "queues",
    "events",
    "topics",
    "schedules",
    "sweeper",
    "config",
}


def _bundle_manifest() -> dict[str, Any]:
    return build_manifest(SagaRegistry(dict(SAGA_MODULES)))


def _with_extra_sagas(*sagas: Saga) -> dict[str, Any]:
    registry = SagaRegistry(dict(SAGA_MODULES))
    for saga in sagas:
        registry.register(saga)
    return build_manifest(registry)


def _noop(ctx: Any) -> None:
    return None


def _events_saga() -> Saga:
    saga = Saga("billing", queue="billing", queue_settings=QueueSettings(max_attempts=9))
    saga.step(_noop, name="bill")
    saga.wait_for_event("paid", topic="payments.*.confirmed")
    saga.on_event("orders.*.created")
    saga.on_event("**")
    saga.schedule("nightly-bill", "0 3 * * *", description="bill every night")
    return saga


# -- shape -----------------------------------------------------------------------------


def test_manifest_has_every_required_top_level_field() -> None:
    """Version 2, and every top-level field of docs/manifest.md, even when empty."""
    manifest = _bundle_manifest()

    assert manifest["version"] == 2
    assert set(manifest) == TOP_LEVEL


def test_every_function_has_every_required_field_with_its_type() -> None:
    """Each function entry carries exactly the documented fields, typed as documented."""
    for function in _bundle_manifest()["functions"]:
        assert set(function) == set(FUNCTION_FIELDS), function["name"]
        for name, kind in FUNCTION_FIELDS.items():
            assert isinstance(function[name], kind), (function["name"], name)
        assert set(function["env"]) == {"gcp", "aws"}
        if function["gcp"] is not None:
            assert set(function["gcp"]) == {"entry_point", "trigger"}
            assert function["gcp"]["trigger"] in ("http", "pubsub")
        if function["aws"] is not None:
            assert set(function["aws"]) == {"handler", "triggers"}
            assert set(function["aws"]["triggers"]) <= {
                "http_api",
                "sqs",
                "scheduler",
                "eventbridge",
            }


def test_the_functions_are_the_gcp_targets_and_the_aws_handler() -> None:
    """api/worker run on both clouds (one Lambda handler); relay and pubsub on GCP only."""
    functions = {f["name"]: f for f in _bundle_manifest()["functions"]}

    assert list(functions) == ["api", "worker", "relay", "pubsub"]
    assert {name: f["gcp"]["entry_point"] for name, f in functions.items()} == {
        name: name for name in functions
    }
    assert functions["pubsub"]["gcp"]["trigger"] == "pubsub"
    assert functions["api"]["aws"] == {
        "handler": "functions.aws.handler",
        "triggers": ["http_api"],
    }
    assert functions["worker"]["aws"]["handler"] == "functions.aws.handler"
    assert "sqs" in functions["worker"]["aws"]["triggers"]
    assert functions["relay"]["aws"] is None
    assert functions["pubsub"]["aws"] is None


def test_the_gcp_entry_points_exist_in_functions_gcp() -> None:
    """Every gcp.entry_point names a top-level function of functions/gcp.py (parsed)."""
    tree = ast.parse((ROOT / "functions" / "gcp.py").read_text())
    defined = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for function in _bundle_manifest()["functions"]:
        assert function["gcp"]["entry_point"] in defined


def test_api_is_the_only_public_deployed_function() -> None:
    """Only the public start/read API is deployed open to everyone; the worker is private."""
    functions = _bundle_manifest()["functions"]

    assert [f["name"] for f in functions if f["public"] and f["deploy"]] == ["api"]
    assert [f["name"] for f in functions if f["deploy"]] == ["api", "worker"]


def test_timeouts_fit_the_platforms() -> None:
    """api within API Gateway's 30 s; Lambdas within 900 s; Cloud Run within 3600 s."""
    for function in _bundle_manifest()["functions"]:
        timeout = function["timeout_seconds"]
        assert 1 <= timeout <= 3600
        if function["aws"] is not None:
            assert timeout <= 900
        if function["public"] and function["aws"] is not None:
            assert timeout <= 30


def test_worker_serves_every_step_and_api_none() -> None:
    """The worker (and relay) list every saga.step; api and pubsub run no step."""
    functions = {f["name"]: f for f in _bundle_manifest()["functions"]}

    assert "order.charge_payment" in functions["worker"]["steps"]
    assert functions["relay"]["steps"] == functions["worker"]["steps"]
    assert functions["api"]["steps"] == functions["pubsub"]["steps"] == []
    assert functions["pubsub"]["routes"] == []


def test_queues_carry_their_retry_and_rate_settings() -> None:
    """The bundle's queue has every documented setting, at the defaults."""
    (queue,) = _bundle_manifest()["queues"]

    assert set(queue) == set(QUEUE_FIELDS)
    for name, kind in QUEUE_FIELDS.items():
        assert isinstance(queue[name], kind), name
    assert queue["name"] == "relay-steps"
    assert queue["sagas"] == ["fulfilment", "onboarding", "order", "stock_report"]
    assert queue["max_dispatches_per_second"] == 500
    assert queue["dlq_max_receive_count"] == 5


def test_queue_visibility_covers_the_worker_timeout() -> None:
    """SQS hides a message at least as long as the worker Lambda may run with it."""
    manifest = _bundle_manifest()
    worker = next(f for f in manifest["functions"] if f["name"] == "worker")

    for queue in manifest["queues"]:
        assert queue["visibility_timeout_seconds"] >= worker["timeout_seconds"]


def test_a_queue_shorter_than_the_worker_timeout_is_refused() -> None:
    """A visibility timeout below the worker's timeout fails, naming queue and function."""
    saga = Saga("hasty", queue="hasty", queue_settings=QueueSettings(visibility_timeout_seconds=60))
    saga.step(_noop, name="only")

    with pytest.raises(DefinitionError, match=r"'hasty'.*'worker'"):
        _with_extra_sagas(saga)


def test_sagas_on_one_queue_must_agree_on_its_settings() -> None:
    """Two sagas declaring different settings for one queue is a definition error."""
    first = Saga("first", queue="shared", queue_settings=QueueSettings(max_attempts=3))
    second = Saga("second", queue="shared", queue_settings=QueueSettings(max_attempts=4))
    for saga in (first, second):
        saga.step(_noop, name="only")

    with pytest.raises(DefinitionError, match="first, second"):
        _with_extra_sagas(first, second)


def test_events_topics_schedules_come_from_the_sagas() -> None:
    """Start and resume subscriptions, their topics, and schedules, as docs/manifest.md shows."""
    manifest = _with_extra_sagas(_events_saga())

    assert [event for event in manifest["events"] if event["saga"] == "billing"] == [
        {"pattern": "**", "saga": "billing", "starts": True, "resumes": None},
        {"pattern": "orders.*.created", "saga": "billing", "starts": True, "resumes": None},
        {"pattern": "payments.*.confirmed", "saga": "billing", "starts": False, "resumes": "paid"},
    ]
    assert manifest["topics"] == ["couriers", "orders", "payments", "relay-all", "users"]
    assert [item for item in manifest["schedules"] if item["saga"] == "billing"] == [
        {
            "name": "nightly-bill",
            "cron": "0 3 * * *",
            "timezone": "UTC",
            "saga": "billing",
            "input": {},
            "description": "bill every night",
        }
    ]
    billing = next(q for q in manifest["queues"] if q["name"] == "billing")
    assert billing["max_attempts"] == 9
    assert billing["sagas"] == ["billing"]


def test_sweeper_is_described() -> None:
    """The scheduled sweep: its cron, the worker route, and the staleness it re-drives."""
    sweeper = _bundle_manifest()["sweeper"]

    assert sweeper == {"cron": "* * * * *", "path": "/v1/sweep", "stale_after_seconds": 120}


# -- env and config from the settings table --------------------------------------------


def test_env_names_come_from_the_settings_table() -> None:
    """Each function's env is exactly the deployment variables the table gives its role."""
    for function in _bundle_manifest()["functions"]:
        for platform in ("gcp", "aws"):
            expected = sorted(
                v.name
                for v in VARIABLES.values()
                if v.set_by == "deployment"
                and platform in v.platforms
                and function["name"] in v.roles
            )
            if function[platform] is None:
                expected = []
            assert function["env"][platform] == expected, (function["name"], platform)


def test_env_holds_what_the_backend_needs_and_nothing_of_the_other_cloud() -> None:
    """GCP functions get the project and queue path; AWS the table; neither the other's."""
    functions = {f["name"]: f for f in _bundle_manifest()["functions"]}
    gcp, aws = functions["worker"]["env"]["gcp"], functions["worker"]["env"]["aws"]

    assert {"GOOGLE_CLOUD_PROJECT", "RELAY_TASKS_QUEUE", "RELAY_WORKER_URL"} <= set(gcp)
    assert {"RELAY_DYNAMODB_TABLE", "RELAY_SQS_QUEUE_URL"} <= set(aws)
    assert not any(name.startswith("GOOGLE_") for name in aws)
    assert "RELAY_SQS_QUEUE_URL" not in gcp
    assert "RELAY_PUBSUB_TOPICS" not in functions["api"]["env"]["gcp"]
    for function in functions.values():
        for names in function["env"].values():
            assert names == sorted(names)
            assert not set(names) & {"RELAY_FAULTS", "RELAY_SIGNING_KEY", "K_SERVICE"}
            assert (
                not names or "RELAY_DATA_DIR" in names
            )  # the demo services' directory, /tmp on the clouds
            assert not set(names) & set(EMULATOR_VARIABLES)


def test_config_is_fixed_per_platform_and_part_of_every_env() -> None:
    """config gives string values; each name is in the env of every function on it."""
    manifest = _bundle_manifest()

    assert manifest["config"]["gcp"]["RELAY_BACKEND"] == "gcp"
    assert manifest["config"]["aws"]["RELAY_BACKEND"] == "aws"
    assert manifest["config"]["aws"]["RELAY_LOG_FORMAT"] == "aws"
    for platform, values in manifest["config"].items():
        assert all(isinstance(value, str) for value in values.values())
        for function in manifest["functions"]:
            if function[platform] is not None:
                assert set(values) <= set(function["env"][platform])


def test_every_role_in_the_table_is_a_function_target() -> None:
    """The table's roles are the manifest's function names, so no variable is orphaned."""
    names = {target.name for target in function_targets()}
    for variable in VARIABLES.values():
        assert variable.roles <= names, variable.name
        assert variable.platforms <= set(settings.BACKENDS), variable.name


# -- stability -------------------------------------------------------------------------


def test_manifest_bytes_are_stable_across_processes() -> None:
    """Two processes with different hash seeds print the same manifest bytes."""
    outputs = []
    for seed in ("0", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        completed = subprocess.run(
            [sys.executable, "-m", "tooling.cli", "manifest"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        outputs.append(completed.stdout)

    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["version"] == 2


def test_the_bundle_declares_an_event_start_an_event_wait_and_a_schedule() -> None:
    """The shipped examples give `relay publish` and the schedulers something to do."""
    manifest = _bundle_manifest()

    assert manifest["events"] == [
        {"pattern": "couriers.*.picked_up", "saga": "fulfilment", "starts": False,
         "resumes": "courier_pickup"},
        {"pattern": "users.*.signed_up", "saga": "onboarding", "starts": True, "resumes": None},
    ]  # fmt: skip
    assert manifest["topics"] == ["couriers", "users"]
    assert [(s["name"], s["saga"], s["cron"]) for s in manifest["schedules"]] == [
        ("daily-stock-report", "stock_report", "0 6 * * *")
    ]
