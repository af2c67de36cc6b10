"""terraform/modules/aws against the bundle manifest and the code, by parsing the HCL.

The module reads the manifest with ``jsondecode(file(...))`` and derives every Lambda,
queue, event rule and schedule from it in ``locals``. There is no terraform binary with
providers here, so these tests check three things:

- the derivations: each resource's ``for_each`` and each local it rests on refer to the
  manifest field they must (parsed with python-hcl2, compared after whitespace
  normalisation), and the same derivation done in Python over a manifest gives what the
  code needs (deployed functions, routes, queues, environment names);
- the literal parts against the code that reads or writes them: environment variable
  names, the DynamoDB key schema of ``create_table``, the scheduler Input of
  ``functions/aws.py``, the EMF metric of ``infra/aws/emf.py``, the long-delay schedule
  names of ``infra/aws/scheduler_delay.py``;
- the pure translations (cron to EventBridge cron, topic patterns to detail-type filters)
  by evaluating ``modules/aws/eventbridge`` with the offline Terraform 1.0.3 binary.

Two manifests are checked: the bundle's own (``tooling.manifest.build_manifest``) and a
hand-written version-2 manifest (``FIXTURE_MANIFEST``, from docs/manifest.md) with event
patterns and schedules, which the bundle does not declare yet.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.terraform.hcl import (
    REPO_ROOT,
    TERRAFORM_DIR,
    block,
    blocks,
    checkov_skips,
    data_sources,
    locals_,
    module_calls,
    outputs,
    parse_tf_dir,
    references,
    resources,
    run_checkov,
    run_terraform_fmt_check,
    terraform_blocks,
    tool_executable,
    unwrap,
    variable_errors,
    variables,
)
from tests.terraform.manifests import bundle_manifest

MODULE_DIR = TERRAFORM_DIR / "modules" / "aws"
EVENTBRIDGE_DIR = MODULE_DIR / "eventbridge"
EXAMPLE_DIR = TERRAFORM_DIR / "examples" / "aws"
MANIFEST_VERSION = 2

_AWS_ENV = [
    "RELAY_BACKEND",
    "RELAY_DYNAMODB_TABLE",
    "RELAY_INLINE_OUTPUT_LIMIT",
    "RELAY_LOG_FORMAT",
    "RELAY_LOG_LEVEL",
    "RELAY_METRICS",
    "RELAY_PIPELINE_MODULES",
    "RELAY_S3_BUCKET",
    "RELAY_SAGAS",
    "RELAY_SAGA_MODULES",
    "RELAY_SCHEDULER_GROUP",
    "RELAY_SCHEDULER_ROLE_ARN",
    "RELAY_SQS_QUEUE_URL",
]
_API_ROUTES = [
    {"methods": ["GET"], "path": "/healthz"},
    {"methods": ["GET"], "path": "/openapi.json"},
    {"methods": ["GET"], "path": "/v1/runs"},
    {"methods": ["GET"], "path": "/v1/runs/{run_id}"},
    {"methods": ["POST"], "path": "/v1/sagas/{name}/runs"},
]

# A version-2 manifest as docs/manifest.md describes it, with what the bundle lacks:
# event patterns (one with "**") and schedules (one on weekdays, in a non-UTC zone).
FIXTURE_MANIFEST: dict[str, Any] = {
    "version": 2,
    "functions": [
        {
            "name": "api",
            "description": "public run API: start, read and list runs",
            "route_groups": ["api"],
            "routes": _API_ROUTES,
            "steps": [],
            "public": True,
            "deploy": True,
            "memory_mb": 512,
            "timeout_seconds": 30,
            "min_instances": 0,
            "max_instances": 100,
            "concurrency": 80,
            "gcp": {"entry_point": "api", "trigger": "http"},
            "aws": {"handler": "functions.aws.handler", "triggers": ["http_api"]},
            "env": {"gcp": [], "aws": _AWS_ENV},
        },
        {
            "name": "worker",
            "description": "steps, events, schedules and the sweeper",
            "route_groups": ["worker"],
            "routes": [{"methods": ["POST"], "path": "/v1/steps"}],
            "steps": ["order.reserve", "report.build"],
            "public": False,
            "deploy": True,
            "memory_mb": 1024,
            "timeout_seconds": 900,
            "min_instances": 0,
            "max_instances": 50,
            "concurrency": 1,
            "gcp": {"entry_point": "worker", "trigger": "http"},
            "aws": {
                "handler": "functions.aws.handler",
                "triggers": ["eventbridge", "scheduler", "sqs"],
            },
            "env": {"gcp": [], "aws": _AWS_ENV},
        },
        {
            "name": "relay",
            "description": "every route in one function (small deployments)",
            "route_groups": ["admin", "api", "worker"],
            "routes": _API_ROUTES,
            "steps": [],
            "public": True,
            "deploy": False,
            "memory_mb": 1024,
            "timeout_seconds": 900,
            "min_instances": 0,
            "max_instances": 100,
            "concurrency": 1,
            "gcp": {"entry_point": "relay", "trigger": "http"},
            "aws": None,
            "env": {"gcp": [], "aws": []},
        },
    ],
    "sagas": [{"name": "order"}, {"name": "report"}],
    "tasks": [],
    "queues": [
        {
            "name": "relay-steps",
            "sagas": ["order", "report"],
            "max_dispatches_per_second": 500,
            "max_concurrent_dispatches": 1000,
            "max_attempts": 100,
            "min_backoff_seconds": 1,
            "max_backoff_seconds": 600,
            "visibility_timeout_seconds": 960,
            "dlq_max_receive_count": 5,
        }
    ],
    "events": [
        {"pattern": "orders.*.created", "saga": "order", "starts": True, "resumes": None},
        {"pattern": "payments.*.confirmed", "saga": "order", "starts": False, "resumes": "paid"},
        {"pattern": "audit.**", "saga": "report", "starts": True, "resumes": None},
    ],
    "topics": ["audit", "orders", "payments"],
    "schedules": [
        {
            "name": "nightly-report",
            "cron": "0 3 * * *",
            "timezone": "UTC",
            "saga": "report",
            "input": {},
            "description": "",
        },
        {
            "name": "weekday-digest",
            "cron": "30 9 * * 1-5",
            "timezone": "Europe/Paris",
            "saga": "report",
            "input": {"kind": "digest"},
            "description": "digest of the day before",
        },
    ],
    "sweeper": {"cron": "* * * * *", "path": "/v1/sweep", "stale_after_seconds": 120},
    "config": {
        "gcp": {"RELAY_BACKEND": "gcp", "RELAY_LOG_FORMAT": "gcp", "RELAY_METRICS": "on"},
        "aws": {"RELAY_BACKEND": "aws", "RELAY_LOG_FORMAT": "aws", "RELAY_METRICS": "on"},
    },
}

# Cron conversions checked by hand against EventBridge's cron reference (day-of-week
# 1-7 = SUN-SAT, "?" in exactly one of the day fields, steps as start/increment).
KNOWN_CRONS = {
    "0 3 * * *": "cron(0 3 * * ? *)",
    "* * * * *": "cron(* * * * ? *)",
    "*/5 * * * *": "cron(0/5 * * * ? *)",
    "30 9 * * 1-5": "cron(30 9 ? * MON-FRI *)",
    "0 0 1 * *": "cron(0 0 1 * ? *)",
    "15 10 * jan,jul 0,6": "cron(15 10 ? JAN,JUL SUN,SAT *)",
    "0 12 * * 5-7": "cron(0 12 ? * FRI-SAT,SUN *)",
    "0 8 */2 * *": "cron(0 8 1/2 * ? *)",
    "0 8 * * mon-fri": "cron(0 8 ? * MON-FRI *)",
    "0 0 * * 7": "cron(0 0 ? * SUN *)",
    "0  6 * *  *": "cron(0 6 * * ? *)",
}
TRICKY_PATTERNS = ["orders.**", "**", "**.created", "a.*.b.**", "payments.confirmed"]

# Names Lambda reserves: setting one in a function's environment fails the deployment.
LAMBDA_RESERVED_ENV = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_REGION",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
    }
)
# Read by boto3 itself rather than by Relay's code.
SDK_ENV = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    }
)


# --- manifests and parsed modules -----------------------------------------------------------


@pytest.fixture(params=["bundle", "fixture"])
def manifest(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The bundle's own manifest, then the hand-written one with events and schedules."""
    if request.param == "fixture":
        return FIXTURE_MANIFEST
    built = bundle_manifest()
    assert built.get("version") == MANIFEST_VERSION, (
        f"relay manifest prints version {built.get('version')}; terraform/modules/aws reads "
        f"version {MANIFEST_VERSION} (docs/manifest.md)"
    )
    return built


@pytest.fixture(scope="module")
def module() -> dict[str, dict[str, Any]]:
    """terraform/modules/aws, parsed."""
    return parse_tf_dir(MODULE_DIR)


@pytest.fixture(scope="module")
def module_locals(module: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The module's local values (expressions as ``${...}`` strings)."""
    return locals_(module)


def _expr(value: Any) -> str:
    """An HCL expression without its ``${}`` and with whitespace collapsed, for comparison."""
    text = unwrap(value)
    assert isinstance(text, str), f"expected an expression, got {value!r}"
    return re.sub(r"\s+", " ", text).strip()


def _deployed(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``local.functions`` in Python: functions with deploy and an aws section."""
    return {f["name"]: f for f in manifest["functions"] if f["deploy"] and f["aws"] is not None}


def _trigger_function(manifest: dict[str, Any], trigger: str) -> str | None:
    """``local.<trigger>_function``: the one deployed function with that trigger, if any."""
    names = [name for name, f in _deployed(manifest).items() if trigger in f["aws"]["triggers"]]
    assert len(names) <= 1, f"several deployed functions take {trigger!r}: {names} (one() fails)"
    return names[0] if names else None


# --- the manifest drives the functions --------------------------------------------------------


def test_manifest_is_read_with_jsondecode(module_locals: dict[str, Any]) -> None:
    """The module reads the manifest file as docs/manifest.md says Terraform does."""
    assert _expr(module_locals["manifest"]) == "jsondecode(file(var.manifest_path))"


def test_functions_are_the_deployed_aws_targets(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """One Lambda per manifest function with deploy and aws, built from its manifest entry."""
    assert _expr(module_locals["functions"]) == (
        "{for f in local.manifest.functions : f.name => f if f.deploy && f.aws != null}"
    )
    fn = resources(module, "aws_lambda_function")["this"]
    assert _expr(fn["for_each"]) == "local.functions"
    assert _expr(fn["handler"]) == "each.value.aws.handler"
    assert fn["runtime"] == "python3.12"
    assert _expr(fn["filename"]) == "var.package_path"
    assert _expr(fn["source_code_hash"]) == "filebase64sha256(var.package_path)"
    assert _expr(fn["memory_size"]) == "each.value.memory_mb"
    assert _expr(fn["timeout"]) == "each.value.timeout_seconds"
    assert _expr(fn["role"]) == "aws_iam_role.function[each.key].arn"
    assert block(fn, "tracing_config")["mode"] == "Active"
    assert "aws_sqs_queue.async_dlq" in _expr(block(fn, "dead_letter_config")["target_arn"])
    assert _expr(block(fn, "environment")["variables"]) == "local.function_env[each.key]"
    for per_function in ("aws_iam_role", "aws_cloudwatch_log_group"):
        body = resources(module, per_function)["function"]
        assert _expr(body["for_each"]) == "local.functions"

    deployed = _deployed(manifest)
    assert deployed, "the manifest deploys no function on AWS"
    for name, f in deployed.items():
        module_name, _, attribute = f["aws"]["handler"].rpartition(".")
        handler = getattr(__import__(module_name, fromlist=[attribute]), attribute)
        assert callable(handler), f"{name}: handler {f['aws']['handler']} is not callable"
        assert f["timeout_seconds"] <= 900, f"{name}: over Lambda's 900 s"
        if f["public"]:
            assert f["timeout_seconds"] <= 30, f"{name} is public: API Gateway stops at 30 s"


def _env_sources(module_locals: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    deployment = module_locals["env_deployment"]
    optional = module_locals["env_optional"]
    not_set = module_locals["env_not_set"]
    assert isinstance(deployment, dict)
    assert isinstance(optional, list)
    assert isinstance(not_set, list)
    return deployment, optional, not_set


def test_environment_keys_are_the_manifest_env_names(
    module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Each function's environment is keyed by its env.aws names, each with a known source."""
    assert _expr(module_locals["function_env"]) == (
        "{for name, f in local.functions : name => {for key in f.env.aws : "
        "key => local.env_values[key] if contains(keys(local.env_values), key)}}"
    )
    assert _expr(module_locals["env_values"]) == (
        "merge(local.manifest.config.aws, {for name, value in var.environment : "
        "name => value if contains(local.env_optional, name)}, local.env_deployment)"
    )
    deployment, optional, not_set = _env_sources(module_locals)
    fixed = manifest["config"]["aws"]
    for name, f in _deployed(manifest).items():
        names = f["env"]["aws"]
        assert names == sorted(set(names)), f"{name}: env.aws must be sorted and unique"
        unknown = set(names) - set(fixed) - set(deployment) - set(optional) - set(not_set)
        assert not unknown, (
            f"function {name} reads {sorted(unknown)}, which terraform/modules/aws neither "
            "sets (config.aws, local.env_deployment), offers (local.env_optional) nor "
            "deliberately leaves unset (local.env_not_set)"
        )
        # What the function gets with every optional setting given, exactly as HCL does.
        env_values = {**fixed, **dict.fromkeys(optional, "x"), **deployment}
        given = {key for key in names if key in env_values}
        assert given <= set(names)
        assert not given & LAMBDA_RESERVED_ENV, f"{name}: reserved by Lambda: {given}"
        required = {"RELAY_BACKEND", "RELAY_DYNAMODB_TABLE", "RELAY_SQS_QUEUE_URL"}
        assert required & set(names) <= given, f"{name} would lack {required - given}"
    assert fixed.get("RELAY_BACKEND") == "aws"


def _names_read_by_code() -> set[str]:
    """Every RELAY_*/AWS_* string literal in functions/ and infra/aws/ (parsed, not grepped)."""
    found: set[str] = set()
    sources = [*(REPO_ROOT / "functions").glob("*.py"), *(REPO_ROOT / "infra" / "aws").glob("*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"(RELAY|AWS)_[A-Z0-9_]+", node.value)
            ):
                found.add(node.value)
    return found


def test_every_environment_name_the_module_knows_is_read_by_the_code(
    module_locals: dict[str, Any],
) -> None:
    """No stray or misspelt name: each one Terraform sets, offers or skips is read somewhere."""
    deployment, optional, not_set = _env_sources(module_locals)
    read = _names_read_by_code() | SDK_ENV
    for name in [*deployment, *optional, *not_set]:
        assert name in read, f"{name} is in terraform/modules/aws but no code reads it"
    assert not set(deployment) & LAMBDA_RESERVED_ENV
    assert set(deployment).isdisjoint(optional) and set(deployment).isdisjoint(not_set)
    assert {"AWS_REGION", "AWS_ENDPOINT_URL"} <= set(not_set)


def test_deployment_values_point_at_the_module_resources(module_locals: dict[str, Any]) -> None:
    """Table, queue, bucket and scheduler settings come from the resources the module makes."""
    deployment, _optional, _not_set = _env_sources(module_locals)
    assert _expr(deployment["RELAY_DYNAMODB_TABLE"]) == "aws_dynamodb_table.state.name"
    assert _expr(deployment["RELAY_SQS_QUEUE_URL"]) == "aws_sqs_queue.steps[local.step_queue].url"
    assert _expr(deployment["RELAY_S3_BUCKET"]) == "aws_s3_bucket.io.id"
    assert _expr(deployment["RELAY_SCHEDULER_ROLE_ARN"]) == "aws_iam_role.delay_scheduler.arn"
    assert _expr(deployment["RELAY_SCHEDULER_GROUP"]) == (
        "aws_scheduler_schedule_group.delays.name"
    )
    assert _expr(module_locals["step_queue"]) == "local.manifest.queues[0].name"


# --- queues -------------------------------------------------------------------------------


def test_queues_have_dead_letter_queues_and_partial_batch_mappings(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Per manifest queue: a queue, its DLQ with the manifest's receive count, an ESM."""
    assert _expr(module_locals["queues"]) == "{for q in local.manifest.queues : q.name => q}"
    assert _expr(module_locals["sqs_function"]) == (
        'one([for f in local.functions : f.name if contains(f.aws.triggers, "sqs")])'
    )
    queues = resources(module, "aws_sqs_queue")
    steps, dead = queues["steps"], queues["dead_letter"]
    assert _expr(steps["for_each"]) == _expr(dead["for_each"]) == "local.queues"
    assert _expr(steps["visibility_timeout_seconds"]) == "each.value.visibility_timeout_seconds"
    redrive = _expr(steps["redrive_policy"])
    assert "deadLetterTargetArn = aws_sqs_queue.dead_letter[each.key].arn" in redrive
    assert "maxReceiveCount = each.value.dlq_max_receive_count" in redrive
    for queue in queues.values():
        assert queue["sqs_managed_sse_enabled"] is True
    esm = resources(module, "aws_lambda_event_source_mapping")["steps"]
    assert _expr(esm["for_each"]) == (
        "{for name, q in local.queues : name => q if local.sqs_function != null}"
    )
    assert esm["function_response_types"] == ["ReportBatchItemFailures"]
    assert _expr(esm["event_source_arn"]) == "aws_sqs_queue.steps[each.key].arn"
    assert _expr(esm["function_name"]) == "aws_lambda_function.this[local.sqs_function].arn"

    worker = _trigger_function(manifest, "sqs")
    assert worker is not None, "no deployed function takes SQS step messages"
    timeout = _deployed(manifest)[worker]["timeout_seconds"]
    for queue in manifest["queues"]:
        assert queue["visibility_timeout_seconds"] >= timeout, queue["name"]
        assert queue["dlq_max_receive_count"] >= 1, queue["name"]
    # The AWS code reads one step queue (RELAY_SQS_QUEUE_URL): every saga must be on it.
    step_queue = manifest["queues"][0]
    assert {s["name"] for s in manifest["sagas"]} <= set(step_queue["sagas"])


# --- DynamoDB -----------------------------------------------------------------------------


class _RecordingDynamoDB:
    """Records what ``create_table`` asks DynamoDB for (a stand-in for its client)."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, Any]] = {}

    def create_table(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["create_table"] = kwargs
        return {}

    def update_time_to_live(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["update_time_to_live"] = kwargs
        return {}

    def get_waiter(self, name: str) -> _RecordingDynamoDB:
        return self

    def wait(self, **kwargs: Any) -> None:
        return None


def test_dynamodb_table_is_the_one_create_table_makes(module: dict[str, dict[str, Any]]) -> None:
    """Keys, attribute types, indexes, projection, billing and TTL equal create_table's."""
    from infra.aws.dynamodb import BY_SAGA_INDEX, BY_STATUS_INDEX, create_table

    client = _RecordingDynamoDB()
    create_table(cast(Any, client), table_name="t")
    made = client.calls["create_table"]
    ttl = client.calls["update_time_to_live"]["TimeToLiveSpecification"]

    table = resources(module, "aws_dynamodb_table")["state"]
    keys = {k["KeyType"]: k["AttributeName"] for k in made["KeySchema"]}
    assert (table["hash_key"], table["range_key"]) == (keys["HASH"], keys["RANGE"])
    assert table["billing_mode"] == made["BillingMode"]
    assert {a["name"]: a["type"] for a in blocks(table, "attribute")} == {
        a["AttributeName"]: a["AttributeType"] for a in made["AttributeDefinitions"]
    }
    expected_indexes = {
        index["IndexName"]: (
            {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]},
            index["Projection"]["ProjectionType"],
        )
        for index in made["GlobalSecondaryIndexes"]
    }
    assert set(expected_indexes) == {BY_SAGA_INDEX, BY_STATUS_INDEX}
    assert {
        index["name"]: (
            {"HASH": index["hash_key"], "RANGE": index["range_key"]},
            index["projection_type"],
        )
        for index in blocks(table, "global_secondary_index")
    } == expected_indexes
    assert block(table, "ttl") == {"attribute_name": ttl["AttributeName"], "enabled": True}
    assert block(table, "point_in_time_recovery")["enabled"] is True
    assert block(table, "server_side_encryption")["enabled"] is True


# --- EventBridge: schedules and events ----------------------------------------------------


def _terraform_env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "TF_"))
    }
    env.update(TF_DATA_DIR=str(data_dir), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    return env


def _evaluate_eventbridge(
    workdir: Path, schedules: dict[str, str], patterns: list[str]
) -> tuple[dict[str, Any] | None, str]:
    """Apply modules/aws/eventbridge in a throwaway root (no provider, offline).

    Returns its outputs, or None and Terraform's error text when it refused the inputs.
    """
    terraform = tool_executable("terraform", "terraform")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.tf").write_text(
        'variable "schedules" {\n  type = map(string)\n}\n'
        'variable "event_patterns" {\n  type = set(string)\n}\n'
        f'module "eventbridge" {{\n  source         = "{EVENTBRIDGE_DIR}"\n'
        "  schedules      = var.schedules\n  event_patterns = var.event_patterns\n}\n"
        'output "expressions" {\n  value = module.eventbridge.expressions\n}\n'
        'output "detail_type_filters" {\n  value = module.eventbridge.detail_type_filters\n}\n',
        encoding="utf-8",
    )
    (workdir / "terraform.tfvars.json").write_text(
        json.dumps({"schedules": schedules, "event_patterns": patterns}), encoding="utf-8"
    )
    env = _terraform_env(workdir / ".terraform")
    state = str(workdir / "terraform.tfstate")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(terraform), *args, "-no-color"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    init = run("init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    apply = run("apply", "-auto-approve", "-input=false", f"-state={state}")
    if apply.returncode != 0:
        return None, apply.stdout + apply.stderr
    shown = run("output", "-json", f"-state={state}")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    values = {name: item["value"] for name, item in json.loads(shown.stdout).items()}
    return values, ""


def _terraform_console(expression: str, workdir: Path) -> Any:
    """The value of one HCL expression, evaluated by ``terraform console`` (no provider)."""
    terraform = tool_executable("terraform", "terraform")
    proc = subprocess.run(
        [str(terraform), "console"],
        input=expression + "\n",
        cwd=workdir,
        env=_terraform_env(workdir / ".terraform"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Console prints a string as a quoted HCL literal, whose escapes are JSON's here.
    return json.loads(proc.stdout.strip().splitlines()[-1])


_DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


def eventbridge_cron(cron: str) -> str:
    """The conversion modules/aws/eventbridge does, written again in Python."""
    minute, hour, dom, month, dow = cron.split()

    def step(field: str, first: int) -> str:
        return f"{first}/{field[2:]}" if field.startswith("*/") else field

    def day(token: str) -> str:
        if re.fullmatch(r"[0-7]", token):
            return _DAY_NAMES[int(token)]
        if re.fullmatch(r"[0-7]-[0-7]", token):
            start, end = (int(part) for part in token.split("-"))
            if end == 7:
                return f"{_DAY_NAMES[start]}-SAT,SUN"
            return f"{_DAY_NAMES[start]}-{_DAY_NAMES[end]}"
        return token

    if dow == "*":
        days = f"{step(dom, 1)} {step(month.upper(), 1)} ?"
    elif dom == "*":
        days = f"? {step(month.upper(), 1)} {','.join(day(t) for t in dow.upper().split(','))}"
    else:
        raise ValueError(f"{cron!r} restricts both day fields")
    return f"cron({step(minute, 0)} {step(hour, 0)} {days} *)"


def _eventbridge_filter(pattern: str) -> dict[str, str]:
    """The detail-type filter modules/aws/eventbridge builds, written again in Python."""
    if "**" not in pattern:
        return {"operator": "wildcard", "value": pattern}
    literal = pattern.split("*", maxsplit=1)[0].removesuffix(".")
    if not literal:
        return {"operator": "wildcard", "value": "*"}
    return {"operator": "prefix", "value": literal}


def _eventbridge_accepts(event_filter: dict[str, str], detail_type: str) -> bool:
    """EventBridge's matching of a wildcard ("*": any characters) or prefix filter."""
    if event_filter["operator"] == "prefix":
        return detail_type.startswith(event_filter["value"])
    regex = ".*".join(re.escape(part) for part in event_filter["value"].split("*"))
    return re.fullmatch(regex, detail_type) is not None


def _sample_topics(pattern: str) -> Iterator[str]:
    """Topics a pattern matches: each "*" as one segment, each "**" as zero to two."""
    choices = {"*": [["x"], ["long-seg_2"]], "**": [[], ["x"], ["x", "y"]]}
    variants: list[list[str]] = [[]]
    for segment in pattern.split("."):
        options = choices.get(segment, [[segment]])
        variants = [done + option for done in variants for option in options]
    for variant in variants:
        if variant:
            yield ".".join(variant)


@pytest.fixture(scope="module")
def eventbridge_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """modules/aws/eventbridge evaluated for every cron and pattern these tests know."""
    manifests = [FIXTURE_MANIFEST, bundle_manifest()]
    crons = set(KNOWN_CRONS) | {s["cron"] for m in manifests for s in m["schedules"]}
    patterns = set(TRICKY_PATTERNS) | {e["pattern"] for m in manifests for e in m["events"]}
    workdir = tmp_path_factory.mktemp("eventbridge")
    values, error = _evaluate_eventbridge(
        workdir, {f"s{i}": cron for i, cron in enumerate(sorted(crons))}, sorted(patterns)
    )
    assert values is not None, error
    names = {f"s{i}": cron for i, cron in enumerate(sorted(crons))}
    return {
        "crons": {names[key]: value for key, value in values["expressions"].items()},
        "filters": values["detail_type_filters"],
    }


def test_cron_conversion_matches_eventbridge_rules(eventbridge_outputs: dict[str, Any]) -> None:
    """Known crons convert as EventBridge expects ("?" rule, SUN=1 numbering, steps)."""
    converted = eventbridge_outputs["crons"]
    for cron, expected in KNOWN_CRONS.items():
        assert converted[cron] == expected, cron
        assert eventbridge_cron(cron) == expected, cron


def test_each_manifest_schedule_converts(
    eventbridge_outputs: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Every schedule of the manifest gets the EventBridge cron the Python conversion gives."""
    for schedule in manifest["schedules"]:
        cron = schedule["cron"]
        assert eventbridge_outputs["crons"][cron] == eventbridge_cron(cron), schedule["name"]


def test_crons_eventbridge_cannot_express_are_refused(tmp_path: Path) -> None:
    """A cron restricting both day fields (cron ORs them) fails the module's validation."""
    values, error = _evaluate_eventbridge(tmp_path / "both", {"x": "0 0 1 * 1"}, [])
    assert values is None
    assert "cannot express" in re.sub(r"\s+", " ", error)
    values, error = _evaluate_eventbridge(tmp_path / "step", {"x": "0 0 * * */2"}, [])
    assert values is None
    assert "Day-of-week" in error


def test_topic_filters_cover_every_topic_the_pattern_matches(
    eventbridge_outputs: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Each rule's detail-type filter lets through every topic its Relay pattern matches."""
    from core.domain.triggers import topic_matches

    filters = eventbridge_outputs["filters"]
    for pattern in {*TRICKY_PATTERNS, *(e["pattern"] for e in manifest["events"])}:
        assert filters[pattern] == _eventbridge_filter(pattern), pattern
        for topic in _sample_topics(pattern):
            assert topic_matches(pattern, topic)
            assert _eventbridge_accepts(filters[pattern], topic), (pattern, topic)


def test_schedules_invoke_the_worker_with_the_input_the_handler_parses(
    module: dict[str, dict[str, Any]],
    module_locals: dict[str, Any],
    manifest: dict[str, Any],
    tmp_path: Path,
) -> None:
    """One schedule per manifest schedule, in its time zone, with functions/aws.py's Input."""
    from functions.aws_events import SCHEDULE_MARKER, SchedulerInvocation

    assert _expr(module_locals["schedules"]) == "{for s in local.manifest.schedules : s.name => s}"
    call = module_calls(module)["eventbridge"]
    assert _expr(call["schedules"]) == "{for name, s in local.schedules : name => s.cron}"
    assert _expr(call["event_patterns"]) == "local.event_patterns"
    schedule = resources(module, "aws_scheduler_schedule")["saga"]
    assert _expr(schedule["for_each"]) == (
        "{for name, s in local.schedules : name => s if local.scheduler_function != null}"
    )
    assert _expr(schedule["schedule_expression"]) == "module.eventbridge.expressions[each.key]"
    assert _expr(schedule["schedule_expression_timezone"]) == "each.value.timezone"
    target = block(schedule, "target")
    assert _expr(target["arn"]) == "aws_lambda_function.this[local.scheduler_function].arn"
    assert _expr(target["role_arn"]) == "aws_iam_role.cron_scheduler.arn"
    input_expression = _expr(target["input"])
    assert "each.key" in input_expression
    for item in manifest["schedules"]:
        # The Input Terraform would send for this schedule, evaluated by Terraform itself,
        # then what Scheduler delivers once it has substituted its context attribute.
        text = _terraform_console(
            input_expression.replace("each.key", json.dumps(item["name"])), tmp_path
        )
        assert "<aws.scheduler.scheduled-time>" in text, text
        sent = json.loads(text.replace("<aws.scheduler.scheduled-time>", "2026-11-27T03:00:00Z"))
        assert sent["relay"] == SCHEDULE_MARKER
        assert SchedulerInvocation.infer(sent)
        assert SchedulerInvocation.parse(sent)[0] == item["name"]
    if manifest["schedules"]:
        assert _trigger_function(manifest, "scheduler") is not None


def test_sweeper_schedule_invokes_the_worker_with_the_input_the_handler_parses(
    module: dict[str, dict[str, Any]], manifest: dict[str, Any], tmp_path: Path
) -> None:
    """The manifest's sweeper runs on its cron and sends what functions/aws.py sweeps with."""
    from functions.aws_events import SweepInvocation

    call = module_calls(module)["sweeper_cron"]
    assert {k: _expr(v) for k, v in call["schedules"].items()} == {
        "sweeper": "local.manifest.sweeper.cron"
    }
    sweeper = resources(module, "aws_scheduler_schedule")["sweeper"]
    assert _expr(sweeper["count"]) == "local.scheduler_function != null ? 1 : 0"
    assert _expr(sweeper["schedule_expression"]) == 'module.sweeper_cron.expressions["sweeper"]'
    target = block(sweeper, "target")
    assert _expr(target["arn"]) == "aws_lambda_function.this[local.scheduler_function].arn"
    assert _expr(target["role_arn"]) == "aws_iam_role.cron_scheduler.arn"
    stale = manifest["sweeper"]["stale_after_seconds"]
    text = _terraform_console(
        _expr(target["input"]).replace(
            "local.manifest.sweeper.stale_after_seconds", json.dumps(stale)
        ),
        tmp_path,
    )
    sent = json.loads(text)
    assert SweepInvocation.infer(sent)
    assert SweepInvocation.parse(sent, default=-1.0) == stale
    values, error = _evaluate_eventbridge(
        tmp_path / "sweeper", {"sweeper": manifest["sweeper"]["cron"]}, []
    )
    assert values is not None, error
    assert values["expressions"]["sweeper"] == eventbridge_cron(manifest["sweeper"]["cron"])
    assert _trigger_function(manifest, "scheduler") is not None


def test_event_rules_target_the_worker_by_detail_type(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """One rule per distinct manifest pattern, filtering detail-type, the handler's topic."""
    from functions.aws_events import EventBridgeEvent

    assert _expr(module_locals["event_patterns"]) == (
        "toset([for e in local.manifest.events : e.pattern])"
    )
    rule = resources(module, "aws_cloudwatch_event_rule")["topic"]
    assert _expr(rule["for_each"]) == (
        "local.events_function == null ? toset([]) : local.event_patterns"
    )
    pattern = _expr(rule["event_pattern"])
    assert '"detail-type" = [{ (module.eventbridge.detail_type_filters[each.key].operator) = ' in (
        pattern.replace("[{(", "[{ (")
    )
    target = resources(module, "aws_cloudwatch_event_target")["topic"]
    assert _expr(target["for_each"]) == "aws_cloudwatch_event_rule.topic"
    assert _expr(target["arn"]) == "aws_lambda_function.this[local.events_function].arn"
    permission = resources(module, "aws_lambda_permission")["events"]
    assert _expr(permission["source_arn"]) == "each.value.arn"
    assert permission["principal"] == "events.amazonaws.com"

    event = {"detail-type": "orders.eu.created", "source": "shop", "detail": {}, "id": "e-1"}
    assert EventBridgeEvent.infer(event)
    assert EventBridgeEvent.parse(event)[0].topic == event["detail-type"]
    if manifest["events"]:
        assert _trigger_function(manifest, "eventbridge") is not None


# --- HTTP API -----------------------------------------------------------------------------


def test_http_api_serves_exactly_the_api_routes(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Routes are the api functions' manifest routes, one per method, nothing else."""
    assert _expr(module_locals["api_functions"]) == (
        "{for name, f in local.functions : name => f if f.public}"
    )
    assert _expr(module_locals["api_routes"]) == (
        "{for route in flatten([for name, f in local.api_functions : [for r in f.routes : "
        '[for method in r.methods : {key = "${method} ${r.path}", function = name}]]]) : '
        "route.key => route.function}"
    )
    route = resources(module, "aws_apigatewayv2_route")["public"]
    assert _expr(route["for_each"]) == "local.api_routes"
    assert _expr(route["route_key"]) == "each.key"
    integration = resources(module, "aws_apigatewayv2_integration")["public"]
    assert _expr(integration["for_each"]) == "local.api_functions"
    assert integration["payload_format_version"] == "2.0"
    assert integration["integration_type"] == "AWS_PROXY"
    stage = resources(module, "aws_apigatewayv2_stage")["public"]
    assert "aws_cloudwatch_log_group.api_access" in _expr(
        block(stage, "access_log_settings")["destination_arn"]
    )
    permission = resources(module, "aws_lambda_permission")["api"]
    assert "execution_arn" in permission["source_arn"]
    assert "aws_lambda_function_url" not in {
        type_ for body in module.values() for item in body.get("resource", []) for type_ in item
    }

    keys = {
        f"{method} {r['path']}"
        for f in _deployed(manifest).values()
        if f["public"]
        for r in f["routes"]
        for method in r["methods"]
    }
    assert keys == {f"{r['methods'][0]} {r['path']}" for r in _API_ROUTES}


def test_routes_are_behind_an_authorizer_unless_public_api(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """AWS_IAM by default, JWT with jwt_issuer/jwt_audience, NONE only with var.public_api."""
    assert _expr(module_locals["api_authorization"]) == (
        'var.public_api ? "NONE" : (var.jwt_issuer != null ? "JWT" : "AWS_IAM")'
    )
    declared = variables(module)
    assert declared["public_api"]["default"] is False
    assert declared["jwt_issuer"]["default"] is None
    assert declared["jwt_audience"]["default"] == []
    assert declared["api_auth"]["default"] == "platform"
    route = resources(module, "aws_apigatewayv2_route")["public"]
    assert _expr(route["authorization_type"]) == "local.api_authorization"
    assert _expr(route["authorizer_id"]) == (
        'local.api_authorization == "JWT" ? aws_apigatewayv2_authorizer.jwt[0].id : null'
    )
    conditions = {
        _expr(item["condition"]) for item in blocks(block(route, "lifecycle"), "precondition")
    }
    assert conditions == {
        "(var.jwt_issuer == null) == (length(var.jwt_audience) == 0)",
        '!var.public_api || var.api_auth != "platform"',
    }
    authorizer = resources(module, "aws_apigatewayv2_authorizer")["jwt"]
    assert authorizer["authorizer_type"] == "JWT"
    assert authorizer["identity_sources"] == ["$request.header.Authorization"]
    jwt = block(authorizer, "jwt_configuration")
    assert (_expr(jwt["issuer"]), _expr(jwt["audience"])) == ("var.jwt_issuer", "var.jwt_audience")
    # "NONE" is written once in the module: in the branch var.public_api selects.
    literal = json.dumps(_without_prose(module))
    assert literal.count('\\"NONE\\"') + literal.count('"NONE"') == 1


def test_checkov_flags_unauthenticated_routes_exactly_when_public_api_is_set() -> None:
    """CKV_AWS_309 passes by default and fails with public_api = true; no skip hides it."""
    default = run_checkov(MODULE_DIR)
    assert default.ok, default.describe()
    assert "CKV_AWS_309" in {finding.check_id for finding in default.passed}
    assert "CKV_AWS_309" not in {finding.check_id for finding in default.skipped}
    public = run_checkov(MODULE_DIR, {"public_api": True, "api_auth": "api_key"})
    flagged = {(f.check_id, f.resource) for f in public.failed}
    assert flagged == {("CKV_AWS_309", "aws_apigatewayv2_route.public")}


def test_api_function_gets_its_callers_settings(module_locals: dict[str, Any]) -> None:
    """RELAY_API_AUTH and RELAY_PLATFORM_GRANTS come from the module's variables."""
    deployment, _optional, _not_set = _env_sources(module_locals)
    assert _expr(deployment["RELAY_API_AUTH"]) == "var.api_auth"
    assert _expr(deployment["RELAY_PLATFORM_GRANTS"]) == "var.platform_grants"


def _without_prose(value: Any) -> Any:
    """Parsed HCL without descriptions and error messages (prose may name what it forbids)."""
    if isinstance(value, dict):
        return {
            k: _without_prose(v)
            for k, v in value.items()
            if k not in ("description", "error_message")
        }
    if isinstance(value, list):
        return [_without_prose(v) for v in value]
    return value


def test_event_rules_accept_named_sources_only(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """Every rule requires source to be exactly one of var.event_sources (required, no "*")."""
    rule = resources(module, "aws_cloudwatch_event_rule")["topic"]
    pattern = _expr(rule["event_pattern"])
    assert re.search(r"\bsource = var\.event_sources\b", pattern), pattern
    assert "length(values) > 0" not in pattern  # no "any source when the list is empty"
    (precondition,) = blocks(block(rule, "lifecycle"), "precondition")
    assert _expr(precondition["condition"]) == "length(var.event_sources) > 0"
    sources = variables(module)["event_sources"]
    assert sources["default"] == []
    (validation,) = blocks(sources, "validation")
    assert "for source in var.event_sources" in _expr(validation["condition"])


def test_the_event_bus_lets_named_publishers_only(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """The module's own bus: PutEvents denied to every principal but var.event_publishers."""
    assert _expr(module_locals["owns_event_bus"]) == (
        "local.has_event_rules && var.event_bus_name == null"
    )
    assert variables(module)["event_bus_name"]["default"] is None
    bus = resources(module, "aws_cloudwatch_event_bus")["relay"]
    assert _expr(bus["count"]) == "local.owns_event_bus ? 1 : 0"
    policy = resources(module, "aws_cloudwatch_event_bus_policy")["relay"]
    assert _expr(policy["policy"]) == "data.aws_iam_policy_document.event_bus[0].json"
    (precondition,) = blocks(block(policy, "lifecycle"), "precondition")
    assert _expr(precondition["condition"]) == "length(var.event_publishers) > 0"
    document = data_sources(module, "aws_iam_policy_document")["event_bus"]
    statements = {s["sid"]: s for s, _gate in _statements(document)}
    deny = statements["OnlyNamedPublishers"]
    assert (deny["effect"], deny["actions"]) == ("Deny", ["events:PutEvents"])
    assert block(deny, "principals") == {"type": "*", "identifiers": ["*"]}
    condition = block(deny, "condition")
    assert (condition["test"], condition["variable"]) == ("ArnNotLike", "aws:PrincipalArn")
    assert _expr(condition["values"]) == "var.event_publishers"
    allow = statements["NamedPublishers"]
    assert _expr(block(allow, "principals")["identifiers"]) == "var.event_publishers"
    rule = resources(module, "aws_cloudwatch_event_rule")["topic"]
    assert "aws_cloudwatch_event_bus.relay[0].name" in _expr(rule["event_bus_name"])
    target = resources(module, "aws_cloudwatch_event_target")["topic"]
    assert _expr(target["event_bus_name"]) == "each.value.event_bus_name"


@pytest.mark.parametrize(
    ("sources", "accepted"),
    [
        (["com.example.payments", "shop/orders", "partner:acme"], True),
        (["*"], False),
        (["com.example.*"], False),
        ([""], False),
        (["com.example payments"], False),
    ],
)
def test_event_sources_are_exact_names(tmp_path: Path, sources: list[str], accepted: bool) -> None:
    """The event_sources validation (evaluated by Terraform) refuses wildcards and blanks."""
    error = variable_errors(MODULE_DIR, {"event_sources": sources}, tmp_path)
    assert (error == "") == accepted, error
    if not accepted:
        assert "exact source name" in re.sub(r"\s+", " ", error)


@pytest.mark.parametrize(
    ("publishers", "accepted"),
    [
        (["arn:aws:iam::123456789012:role/payments"], True),
        (["*"], False),
        (["arn:aws:iam::*:role/x"], False),
        (["arn:aws:iam::123456789012:root"], False),
    ],
)
def test_event_publishers_are_principal_arns(
    tmp_path: Path, publishers: list[str], accepted: bool
) -> None:
    """The event_publishers validation refuses "*" and ARNs without an account and a name."""
    error = variable_errors(MODULE_DIR, {"event_publishers": publishers}, tmp_path)
    assert (error == "") == accepted, error


# --- IAM ----------------------------------------------------------------------------------


def _statements(document: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """A policy document's statements with the gate of the dynamic ones (None: always)."""
    found: list[tuple[dict[str, Any], str | None]] = [
        (s, None) for s in blocks(document, "statement")
    ]
    for item in blocks(document, "dynamic"):
        for label, body in item.items():
            assert label == "statement"
            found.append((block(body, "content"), _expr(body["for_each"])))
    return found


def test_function_roles_grant_each_service_only_behind_its_setting(
    module: dict[str, dict[str, Any]], manifest: dict[str, Any]
) -> None:
    """A function gets DynamoDB, SQS, S3 and Scheduler only when env.aws (or sqs) needs them."""
    from infra.aws.scheduler_delay import NAME_PREFIX

    document = data_sources(module, "aws_iam_policy_document")["function"]
    assert _expr(document["for_each"]) == "local.functions"
    gates = {
        "StateTable": ('"RELAY_DYNAMODB_TABLE"', "aws_dynamodb_table.state"),
        "SendSteps": ('"RELAY_SQS_QUEUE_URL"', "aws_sqs_queue.steps"),
        "ConsumeSteps": ('each.value.aws.triggers, "sqs"', "aws_sqs_queue.steps"),
        "ReadWriteOutputs": ('"RELAY_S3_BUCKET"', "aws_s3_bucket.io"),
        "ListOutputs": ('"RELAY_S3_BUCKET"', "aws_s3_bucket.io"),
        "CreateDelaySchedules": (
            '"RELAY_SCHEDULER_ROLE_ARN"',
            "aws_scheduler_schedule_group.delays",
        ),
        "PassDelaySchedulerRole": ('"RELAY_SCHEDULER_ROLE_ARN"', "aws_iam_role.delay_scheduler"),
    }
    seen = set()
    for statement, gate in _statements(document):
        sid = statement["sid"]
        if gate is None:
            assert sid in {"WriteOwnLogs", "WriteTraces", "DeadLetterAsyncInvocations"}, sid
            continue
        seen.add(sid)
        expected_gate, resource = gates[sid]
        assert expected_gate in gate and gate.endswith("? [1] : []"), (sid, gate)
        assert resource in json.dumps(statement["resources"]), sid
        if sid == "StateTable":
            assert "/index/*" not in json.dumps(statement["resources"]), "name the indexes"
        if sid == "SendSteps":
            assert statement["actions"] == ["sqs:GetQueueAttributes", "sqs:SendMessage"]
        if sid == "CreateDelaySchedules":
            assert statement["actions"] == ["scheduler:CreateSchedule"]
            assert statement["resources"][0].endswith(f"/{NAME_PREFIX}*")
    assert seen == set(gates)
    names_read = {name for f in _deployed(manifest).values() for name in f["env"]["aws"]}
    for expected_gate, _resource in gates.values():
        if expected_gate.startswith('"'):
            assert expected_gate.strip('"') in names_read, expected_gate


def test_no_allow_statement_uses_wildcards_except_xray(module: dict[str, dict[str, Any]]) -> None:
    """No "*" action, and "*" as a resource only for X-Ray, which has no resource-level ARNs."""
    for name, document in data_sources(module, "aws_iam_policy_document").items():
        for statement, _gate in _statements(document):
            if statement.get("effect") == "Deny":
                continue
            assert not any("*" in action for action in statement["actions"]), (name, statement)
            if "*" in statement.get("resources", []):
                assert statement["actions"] == ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


def test_scheduler_roles_reach_only_their_targets(module: dict[str, dict[str, Any]]) -> None:
    """Cron schedules may invoke the scheduler function only; delays may send to queues only."""
    documents = data_sources(module, "aws_iam_policy_document")
    cron = {s["sid"]: s for s, _ in _statements(documents["cron_scheduler"])}
    assert cron["InvokeWorker"]["actions"] == ["lambda:InvokeFunction"]
    assert "name == local.scheduler_function" in _expr(cron["InvokeWorker"]["resources"])
    delay = {s["sid"]: s for s, _ in _statements(documents["delay_scheduler"])}
    assert delay == {"SendDueSteps": delay["SendDueSteps"]}
    assert delay["SendDueSteps"]["actions"] == ["sqs:SendMessage"]
    assert references(delay["SendDueSteps"]["resources"], "aws_sqs_queue") == {
        "steps",
        "dead_letter",
    }
    for assume in ("scheduler_assume", "lambda_assume"):
        principal = block(block(documents[assume], "statement"), "principals")
        assert principal["type"] == "Service"


# --- alarms -------------------------------------------------------------------------------


def test_alarms_watch_the_metrics_the_code_writes(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """Failed/compensated runs on relay/runs_finished (EMF), errors, dead-letter depth."""
    from core.domain.status import RunStatus
    from core.ports.metrics import RUNS_FINISHED
    from infra.aws.emf import DEFAULT_NAMESPACE

    alarms = resources(module, "aws_cloudwatch_metric_alarm")
    runs = alarms["runs_finished"]
    assert runs["namespace"] == DEFAULT_NAMESPACE
    assert runs["metric_name"] == RUNS_FINISHED.name
    assert set(runs["dimensions"]) == set(RUNS_FINISHED.labels)
    assert _expr(module_locals["sagas"]) == "toset([for s in local.manifest.sagas : s.name])"
    statuses = re.findall(r'"([A-Z]+)"', _expr(module_locals["failed_run_alarms"]))
    assert sorted(statuses) == sorted([RunStatus.FAILED.value, RunStatus.COMPENSATED.value])

    errors = alarms["function_errors"]
    assert _expr(errors["for_each"]) == "local.functions"
    assert (errors["namespace"], errors["metric_name"]) == ("AWS/Lambda", "Errors")
    dead = alarms["dead_letters"]
    assert (dead["namespace"], dead["metric_name"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert (dead["comparison_operator"], dead["threshold"]) == ("GreaterThanThreshold", 0)
    assert references(module_locals["dead_letter_queues"], "aws_sqs_queue") == {
        "dead_letter",
        "async_dlq",
    }
    for alarm in alarms.values():
        assert _expr(alarm["alarm_actions"]) == "local.alarm_actions"


# --- versions, example, checkov, fmt -----------------------------------------------------------


@pytest.mark.parametrize("path", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_versions_pin_terraform_and_the_aws_provider(path: Path) -> None:
    """Terraform >= 1.5 and hashicorp/aws ~> 6.0 (the current major)."""
    (settings,) = terraform_blocks(parse_tf_dir(path))
    assert settings["required_version"] == ">= 1.5"
    (required,) = settings["required_providers"]
    assert required["aws"] == {"source": "hashicorp/aws", "version": "~> 6.0"}


def test_example_calls_the_module_with_every_required_input() -> None:
    """The example passes the module each variable without a default, and re-exports outputs."""
    example = parse_tf_dir(EXAMPLE_DIR)
    call = module_calls(example)["relay"]
    assert call["source"] == "../../modules/aws"
    module = parse_tf_dir(MODULE_DIR)
    required = {name for name, body in variables(module).items() if "default" not in body}
    assert required <= set(call), required - set(call)
    for name, body in outputs(example).items():
        for used in references(body, "module.relay"):
            assert used in outputs(module), (name, used)
    assert (EXAMPLE_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_checkov_passes_with_reasoned_inline_skips(path: Path) -> None:
    """checkov (offline) finds no failed check, parses every file, and each skip has a reason."""
    result = run_checkov(path)
    assert result.ok, result.describe()
    assert result.resource_count > 0
    for file in sorted(path.rglob("*.tf")):
        for skip in checkov_skips(file):
            assert len(skip.reason.split()) >= 5, skip


@pytest.mark.parametrize("path", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_terraform_fmt_leaves_the_files_unchanged(path: Path) -> None:
    """``terraform fmt -check -recursive`` would rewrite nothing."""
    ok, diff = run_terraform_fmt_check(path)
    assert ok, diff
