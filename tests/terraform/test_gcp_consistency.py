"""terraform/modules/gcp against the bundle manifest and the code, by parsing the HCL.

The module reads the manifest with ``jsondecode(file(...))`` and builds every function,
queue, topic and schedule from it with ``for`` expressions. There is no terraform binary
here, so this file evaluates those expressions itself (the small subset the module uses:
``{for x in local.manifest.F : x.K => x if COND}``, ``toset(...)``, references to other
locals) against a manifest, and checks the literal parts (environment variable names,
Firestore indexes, TTL field, metric names) against the code that reads or writes them.

Two manifests are checked: the bundle's own (``tooling.manifest.build_manifest``) and a
hand-written version-2 manifest (``FIXTURE_MANIFEST``, from docs/manifest.md) that has event
topics and schedules, which the bundle does not declare yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import is_ci
from tests.terraform.hcl import (
    TERRAFORM_DIR,
    block,
    blocks,
    checkov_skips,
    dynamic_blocks,
    locals_,
    module_calls,
    parse_tf_dir,
    references,
    resources,
    run_checkov,
    run_terraform_fmt_check,
    terraform_blocks,
    unwrap,
    variable_errors,
    variables,
)
from tests.terraform.manifests import bundle_manifest

MODULE_DIR = TERRAFORM_DIR / "modules" / "gcp"
EXAMPLE_DIR = TERRAFORM_DIR / "examples" / "gcp"
REPO_ROOT = TERRAFORM_DIR.parent
INDEXES_FILE = REPO_ROOT / "infra" / "gcp" / "firestore.indexes.json"
MANIFEST_VERSION = 2

_GCP_ENV = [
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_REGION",
    "RELAY_BACKEND",
    "RELAY_FIRESTORE_COLLECTION",
    "RELAY_FIRESTORE_DATABASE",
    "RELAY_GCS_BUCKET",
    "RELAY_INLINE_OUTPUT_LIMIT",
    "RELAY_LOG_FORMAT",
    "RELAY_LOG_LEVEL",
    "RELAY_METRICS",
    "RELAY_PIPELINE_MODULES",
    "RELAY_SAGAS",
    "RELAY_SAGA_MODULES",
    "RELAY_TASKS_AUDIENCE",
    "RELAY_TASKS_QUEUE",
    "RELAY_TASKS_QUEUES",
    "RELAY_TASKS_SERVICE_ACCOUNT",
    "RELAY_WORKER_URL",
]


# Beside the rest, what the run API reads on the api (who may call it: functions/http) and
# the principal of each delivery route on the worker (functions/http/oidc.py).
_API_ENV = [
    "RELAY_API_AUTH",
    "RELAY_JWT_AUDIENCE",
    "RELAY_JWT_GRANTS_CLAIM",
    "RELAY_JWT_ISSUER",
    "RELAY_JWT_JWKS_URL",
    "RELAY_PLATFORM_GRANTS",
]
_WORKER_ENV = [
    "RELAY_OPERATOR_EMAILS",
    "RELAY_PUBSUB_TOPICS",
    "RELAY_PUSH_SERVICE_ACCOUNT",
    "RELAY_SCHEDULER_SERVICE_ACCOUNT",
]


def _function(name: str, *, public: bool, deploy: bool, groups: list[str]) -> dict[str, Any]:
    extra = [*(_API_ENV if "api" in groups else []), *(_WORKER_ENV if "worker" in groups else [])]
    env = sorted({*_GCP_ENV, *extra})
    return {
        "name": name,
        "description": f"the {name} function",
        "route_groups": groups,
        "routes": [],
        "steps": [],
        "public": public,
        "deploy": deploy,
        "memory_mb": 512,
        "timeout_seconds": 30 if public else 600,
        "min_instances": 0,
        "max_instances": 100,
        "concurrency": 80,
        "gcp": {"entry_point": name, "trigger": "pubsub" if name == "pubsub" else "http"},
        "aws": None,
        "env": {"gcp": env, "aws": []},
    }


def _queue(name: str, sagas: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "sagas": sagas,
        "max_dispatches_per_second": 500,
        "max_concurrent_dispatches": 1000,
        "max_attempts": 100,
        "min_backoff_seconds": 1,
        "max_backoff_seconds": 600,
        "visibility_timeout_seconds": 960,
        "dlq_max_receive_count": 5,
    }


FIXTURE_MANIFEST: dict[str, Any] = {
    "version": 2,
    "functions": [
        _function("api", public=True, deploy=True, groups=["api"]),
        _function("pubsub", public=False, deploy=False, groups=["worker"]),
        _function("relay", public=False, deploy=False, groups=["admin", "api", "worker"]),
        _function("worker", public=False, deploy=True, groups=["admin", "worker"]),
    ],
    "sagas": [],
    "tasks": [],
    "queues": [_queue("payments", ["order"]), _queue("relay-steps", ["onboarding"])],
    "events": [
        {"pattern": "**", "saga": "audit", "starts": True, "resumes": None},
        {"pattern": "orders.*.created", "saga": "order", "starts": True, "resumes": None},
        {"pattern": "payments.*.confirmed", "saga": "order", "starts": False, "resumes": "paid"},
    ],
    "topics": ["orders", "payments", "relay-all"],
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
            "name": "weekly-cleanup",
            "cron": "0 4 * * 1",
            "timezone": "Europe/Paris",
            "saga": "cleanup",
            "input": {"days": 30},
            "description": "drop stale carts",
        },
    ],
    "sweeper": {"cron": "* * * * *", "path": "/v1/sweep", "stale_after_seconds": 120},
    "config": {
        "gcp": {"RELAY_BACKEND": "gcp", "RELAY_LOG_FORMAT": "gcp", "RELAY_METRICS": "on"},
        "aws": {"RELAY_BACKEND": "aws"},
    },
}


@pytest.fixture(params=["bundle", "fixture"])
def manifest(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The bundle's own manifest, then the hand-written one with topics and schedules."""
    if request.param == "fixture":
        return FIXTURE_MANIFEST
    built = bundle_manifest()
    if built.get("version") != MANIFEST_VERSION:
        reason = (
            f"relay manifest prints version {built.get('version')}; terraform/modules/gcp "
            f"reads version {MANIFEST_VERSION} (docs/manifest.md)"
        )
        if is_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return built


@pytest.fixture(scope="module")
def module() -> dict[str, dict[str, Any]]:
    """terraform/modules/gcp, parsed."""
    return parse_tf_dir(MODULE_DIR)


@pytest.fixture(scope="module")
def module_locals(module: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The module's local values, as parsed expressions."""
    return locals_(module)


# --- a tiny evaluator for the module's `for` expressions ----------------------------------------

_FOR = re.compile(
    r"^\{for (?P<a>\w+)(?:, (?P<b>\w+))? in (?P<source>[\w.]+) : (?P<key>[^=]+?) => "
    r"(?P<value>.+?)(?: if (?P<cond>.+))?\}$",
    re.DOTALL,
)
_LIST_FOR = re.compile(
    r"^\[for (?P<a>\w+)(?:, (?P<b>\w+))? in (?P<source>[\w.]+) : (?P<value>\w+)"
    r"(?: if (?P<cond>.+))?\]$",
    re.DOTALL,
)
_TOSET = re.compile(r"^toset\((?P<source>.+)\)$", re.DOTALL)
_ONE = re.compile(r"^one\((?P<source>.+)\)$", re.DOTALL)


def _condition(text: str, names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bool]:
    """A Python predicate for an HCL condition over loop variables (&&, ||, !, ==, contains)."""
    expr = re.sub(r"contains\(([\w.]+), (\"[^\"]*\")\)", r"(\2 in \1)", text)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    expr = re.sub(r"\bnull\b", "None", expr)
    expr = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", expr))
    for name in names:
        expr = re.sub(rf"\b{name}((?:\.\w+)+)", _subscripts, expr)
    code = compile(expr, "<hcl condition>", "eval")

    def predicate(scope: Mapping[str, Any]) -> bool:
        return bool(eval(code, {"__builtins__": {}}, dict(scope)))

    return predicate


def evaluate(expression: Any, manifest: Mapping[str, Any], local_values: Mapping[str, Any]) -> Any:
    """The value of a module expression the way Terraform would compute it for ``manifest``.

    Supports what the module's for_each expressions use; anything else raises ValueError, so
    a rewrite the evaluator cannot follow fails the test instead of passing it unchecked.
    """
    text = unwrap(expression)
    if not isinstance(text, str):
        raise ValueError(f"not an expression: {expression!r}")
    text = text.strip()
    if text == "local.manifest":
        return manifest
    if text.startswith("local.manifest."):
        value: Any = manifest
        for part in text.removeprefix("local.manifest.").split("."):
            value = value[part]
        return value
    if re.fullmatch(r"local\.\w+", text):
        return evaluate(local_values[text.removeprefix("local.")], manifest, local_values)
    if match := _TOSET.match(text):
        return sorted(set(evaluate(match["source"], manifest, local_values)))
    if match := _ONE.match(text):
        values = evaluate(match["source"], manifest, local_values)
        if len(values) > 1:
            raise ValueError(f"one() of {len(values)} values: Terraform fails the plan")
        return values[0] if values else None
    if match := _LIST_FOR.match(text):
        return [scope[match["value"]] for scope in _scopes(match, manifest, local_values)]
    if match := _FOR.match(text):
        return {
            _key(match["key"].strip(), scope): scope[match["b"] or match["a"]]
            for scope in _scopes(match, manifest, local_values)
        }
    raise ValueError(f"the consistency test cannot evaluate {text!r}")


def _scopes(
    match: re.Match[str], manifest: Mapping[str, Any], local_values: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The loop-variable bindings of a for expression that pass its ``if`` condition."""
    source = evaluate(match["source"], manifest, local_values)
    names = (match["a"],) if match["b"] is None else (match["a"], match["b"])
    items = list(source.items()) if isinstance(source, dict) else list(source)
    keep = _condition(match["cond"], names) if match["cond"] else _always
    scopes = []
    for item in items:
        scope = dict(zip(names, item, strict=True)) if len(names) == 2 else {names[0]: item}
        if keep(scope):
            scopes.append(scope)
    return scopes


def _subscripts(match: re.Match[str]) -> str:
    """``f.env.gcp`` -> ``f['env']['gcp']``: HCL attribute access on decoded JSON."""
    root, *attributes = match[0].split(".")
    return root + "".join(f"[{attribute!r}]" for attribute in attributes)


def _always(_scope: Mapping[str, Any]) -> bool:
    return True


def _key(key_expr: str, scope: Mapping[str, Any]) -> str:
    """A for-expression key: a loop variable or one attribute of it (``q.name``)."""
    root, _, attribute = key_expr.partition(".")
    value = scope[root]
    return str(value[attribute] if attribute else value)


def for_each_keys(
    body: Mapping[str, Any], manifest: Mapping[str, Any], local_values: Mapping[str, Any]
) -> set[str]:
    """The instance keys of a resource's for_each for ``manifest``."""
    value = evaluate(body["for_each"], manifest, local_values)
    return set(value) if not isinstance(value, dict) else set(value.keys())


def _deployed(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in manifest["functions"] if f["deploy"] and f["gcp"] is not None}


# --- functions and their environment ------------------------------------------------------------


def test_one_function_per_deployed_manifest_function(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Each function with deploy = true and a gcp target is a google_cloudfunctions2_function."""
    function = resources(module, "google_cloudfunctions2_function")["function"]
    expected = set(_deployed(manifest))
    assert expected, "the manifest deploys no GCP function"
    assert for_each_keys(function, manifest, module_locals) == expected
    build = block(function, "build_config")
    assert build["runtime"] == "python312"
    assert unwrap(build["entry_point"]) == "each.value.gcp.entry_point"
    storage = block(block(build, "source"), "storage_source")
    assert references(storage, "google_storage_bucket_object") == {"package"}


def test_function_settings_come_from_the_manifest(
    module: dict[str, dict[str, Any]], manifest: dict[str, Any]
) -> None:
    """Memory, timeout, instance counts and concurrency are the manifest function's fields."""
    service = block(
        resources(module, "google_cloudfunctions2_function")["function"], "service_config"
    )
    assert service["available_memory"] == "${each.value.memory_mb}Mi"
    sourced = {
        "timeout_seconds": "timeout_seconds",
        "min_instance_count": "min_instances",
        "max_instance_count": "max_instances",
        "max_instance_request_concurrency": "concurrency",
    }
    for argument, field in sourced.items():
        assert unwrap(service[argument]) == f"each.value.{field}", argument
    used = set(re.findall(r"each\.value\.(\w+)", json.dumps(service)))
    for name, entry in _deployed(manifest).items():
        assert used <= set(entry), f"{name} lacks {used - set(entry)}"
        assert entry["timeout_seconds"] <= 3600


def test_each_function_gets_exactly_the_variables_its_code_reads(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """environment_variables keys are the function's env.gcp list, and each has a value."""
    service = block(
        resources(module, "google_cloudfunctions2_function")["function"], "service_config"
    )
    assert unwrap(service["environment_variables"]) == "local.function_env[each.key]"
    # The map is keyed by env.gcp itself, unconditionally: no name added, none dropped.
    function_env = unwrap(module_locals["function_env"])
    assert re.fullmatch(
        r"\{for (\w+), (\w+) in local\.functions : \1 => "
        r"\{for (\w+) in \2\.env\.gcp : \3 => local\.env_values\[\3\]\}\}",
        function_env,
    ), function_env
    sources = ["optional_env", "var.environment", "local.manifest.config.gcp", "deployment_env"]
    merged = unwrap(module_locals["env_values"])
    assert merged == "merge(local.optional_env, var.environment, local.manifest.config.gcp, " + (
        "local.deployment_env)"
    ), f"env_values must merge {sources} in that order"
    deployment = module_locals["deployment_env"]
    optional = module_locals["optional_env"]
    fixed = manifest["config"]["gcp"]
    assert all(isinstance(value, str) for value in fixed.values())
    provided = set(deployment) | set(optional) | set(fixed)
    read_somewhere: set[str] = set()
    for name, entry in _deployed(manifest).items():
        wanted = entry["env"]["gcp"]
        assert wanted == sorted(wanted), f"{name}: env.gcp is not sorted"
        environment = {key: key in provided for key in wanted}
        assert set(environment) == set(wanted)
        missing = sorted(key for key, has_value in environment.items() if not has_value)
        assert not missing, f"{name} reads {missing}, which the module gives no value"
        read_somewhere |= set(wanted)
    stray = (set(deployment) | set(optional)) - read_somewhere
    assert not stray, f"the module sets variables no deployed function reads: {sorted(stray)}"


def test_module_variables_are_names_the_code_declares(module_locals: dict[str, Any]) -> None:
    """Every variable name the module sets is one functions/settings.py reads."""
    import functions.settings as settings

    declared = getattr(settings, "VARIABLES", None)
    names = set(module_locals["deployment_env"]) | set(module_locals["optional_env"])
    if declared is None:  # before the VARIABLES table: the Settings docstring names them all
        doc = settings.Settings.__doc__ or ""
        assert all(f"``{name}``" in doc for name in names - {"GOOGLE_CLOUD_REGION"})
        return
    assert names <= set(declared), sorted(names - set(declared))


_PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")


def _delivery_account(value: Any) -> str:
    """The delivery account an expression names: ``google_service_account.delivery["X"]``."""
    found = set(re.findall(r'google_service_account\.delivery\["(\w+)"\]', json.dumps(value)))
    found |= set(re.findall(r'google_service_account\.delivery\[\\"(\w+)\\"\]', json.dumps(value)))
    assert len(found) == 1, f"expected one delivery account in {value!r}, found {found}"
    return str(found.pop())


def test_the_run_api_is_private_unless_public_api_is_set(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """run.invoker on the api goes to var.api_invokers; allUsers only when var.public_api."""
    api_expected = {name for name, f in _deployed(manifest).items() if f["public"]}
    assert set(evaluate(module_locals["api_functions"], manifest, module_locals)) == api_expected
    members = resources(module, "google_cloud_run_service_iam_member")
    assert set(members) == {"api_invoker", "public_invoker", "worker_invoker"}
    # The only public member in the whole module, and only behind the variable.
    text = json.dumps(_without_comments(module))
    for member in _PUBLIC_MEMBERS:
        assert text.count(f'\\"{member}\\"') + text.count(f'"{member}"') <= (
            1 if member == "allUsers" else 0
        ), member
    public = members["public_invoker"]
    assert unwrap(public["for_each"]) == "var.public_api ? local.api_functions : toset([])"
    assert unwrap(public["member"]) == 'var.public_api ? "allUsers" : null'
    assert unwrap(public["service"]).startswith(
        "google_cloudfunctions2_function.function[each.key]"
    )
    (precondition,) = blocks(block(public, "lifecycle"), "precondition")
    assert unwrap(precondition["condition"]) == 'var.api_auth != "platform"'
    invokers = members["api_invoker"]
    assert "setproduct(local.api_functions, var.api_invokers)" in unwrap(invokers["for_each"])
    assert unwrap(invokers["member"]) == "each.value.member"
    declared = variables(module)
    assert declared["public_api"]["default"] is False
    assert declared["api_invokers"]["default"] == []
    assert declared["api_auth"]["default"] == "platform"
    for grant in members.values():
        assert grant["role"] == "roles/run.invoker"


def test_the_worker_admits_the_delivery_accounts_and_operators_only(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """run.invoker on the worker: the tasks, scheduler and push accounts and var.operators."""
    worker = resources(module, "google_cloud_run_service_iam_member")["worker_invoker"]
    assert "local.worker" in worker["service"]
    for_each = re.sub(r"\s+", " ", unwrap(worker["for_each"]))
    assert "google_service_account.delivery" in for_each
    assert "for member in var.operators : member => member" in for_each
    assert unwrap(worker["member"]) == "each.value"
    assert set(module_locals["delivery_accounts"]) == {"tasks", "scheduler", "push"}
    accounts = resources(module, "google_service_account")
    assert unwrap(accounts["delivery"]["for_each"]) == "local.delivery_accounts"
    assert variables(module)["operators"]["default"] == []
    workers = [n for n, f in _deployed(manifest).items() if "worker" in f["route_groups"]]
    assert len(workers) == 1, f"expected one deployed worker, found {workers}"
    assert evaluate(module_locals["worker"], manifest, module_locals) == workers[0]


def test_each_worker_route_has_its_own_principal(module_locals: dict[str, Any]) -> None:
    """The worker learns the account of each route; the operators come from var.operators."""
    deployment = module_locals["deployment_env"]
    assert _delivery_account(deployment["RELAY_TASKS_SERVICE_ACCOUNT"]) == "tasks"
    assert _delivery_account(deployment["RELAY_SCHEDULER_SERVICE_ACCOUNT"]) == "scheduler"
    assert _delivery_account(deployment["RELAY_PUSH_SERVICE_ACCOUNT"]) == "push"
    assert unwrap(deployment["RELAY_OPERATOR_EMAILS"]) == 'join(",", local.operator_emails)'
    assert unwrap(module_locals["operator_emails"]) == (
        '[for member in var.operators : split(":", member)[1]]'
    )
    assert unwrap(deployment["RELAY_API_AUTH"]) == "var.api_auth"
    assert unwrap(deployment["RELAY_PLATFORM_GRANTS"]) == "var.platform_grants"


def _without_comments(value: Any) -> Any:
    """Parsed HCL without ``description`` prose (which may name allUsers to forbid it)."""
    if isinstance(value, dict):
        return {
            k: _without_comments(v)
            for k, v in value.items()
            if k not in ("description", "error_message")
        }
    if isinstance(value, list):
        return [_without_comments(v) for v in value]
    return value


def test_worker_url_is_cloud_runs_deterministic_url_of_the_worker(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """The worker URL is https://SERVICE-PROJECT_NUMBER.REGION.run.app, known before it exists.

    It is in the worker's own environment (RELAY_WORKER_URL, RELAY_TASKS_AUDIENCE), so it
    cannot be read from the function resource without a dependency cycle.
    """
    assert module_locals["worker_url"] == (
        "https://${local.function_names[local.worker]}-${data.google_project.this.number}"
        ".${var.region}.run.app"
    )
    function = resources(module, "google_cloudfunctions2_function")["function"]
    assert unwrap(function["name"]) == "local.function_names[each.key]"
    deployment = module_locals["deployment_env"]
    assert deployment["RELAY_WORKER_URL"] == "${local.worker_url}/v1/steps"
    assert unwrap(deployment["RELAY_TASKS_AUDIENCE"]) == "local.worker_url"
    assert _delivery_account(deployment["RELAY_TASKS_SERVICE_ACCOUNT"]) == "tasks"


# --- queues, topics, schedules -------------------------------------------------------------------


def test_one_queue_per_manifest_queue_with_its_settings(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Each manifest queue is a google_cloud_tasks_queue with its rate and retry settings."""
    queue = resources(module, "google_cloud_tasks_queue")["queue"]
    assert for_each_keys(queue, manifest, module_locals) == {q["name"] for q in manifest["queues"]}
    rate = block(queue, "rate_limits")
    retry = block(queue, "retry_config")
    assert unwrap(rate["max_dispatches_per_second"]) == "each.value.max_dispatches_per_second"
    assert unwrap(rate["max_concurrent_dispatches"]) == "each.value.max_concurrent_dispatches"
    assert unwrap(retry["max_attempts"]) == "each.value.max_attempts"
    assert retry["min_backoff"] == "${each.value.min_backoff_seconds}s"
    assert retry["max_backoff"] == "${each.value.max_backoff_seconds}s"
    used = set(re.findall(r"each\.value\.(\w+)", json.dumps(queue)))
    for entry in manifest["queues"]:
        assert used <= set(entry), f"queue {entry['name']} lacks {used - set(entry)}"


def test_one_push_subscription_per_manifest_topic(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Each topic has a Pub/Sub topic and an OIDC push subscription to /v1/events with a DLQ."""
    topics = set(manifest["topics"])
    topic = resources(module, "google_pubsub_topic")["event"]
    subscriptions = resources(module, "google_pubsub_subscription")
    subscription = subscriptions["event"]
    assert for_each_keys(topic, manifest, module_locals) == topics
    assert for_each_keys(subscription, manifest, module_locals) == topics
    push = block(subscription, "push_config")
    assert push["push_endpoint"] == "${local.worker_url}/v1/events"
    token = block(push, "oidc_token")
    assert _delivery_account(token["service_account_email"]) == "push"
    assert unwrap(token["audience"]) == "local.worker_url"
    dead_letter = block(subscription, "dead_letter_policy")
    assert references(dead_letter, "google_pubsub_topic") == {"dead_letter"}
    subscriber = resources(module, "google_pubsub_subscription_iam_member")[
        "dead_letter_subscriber"
    ]
    assert for_each_keys(subscriber, manifest, module_locals) == topics
    assert subscriber["role"] == "roles/pubsub.subscriber"
    publisher = resources(module, "google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert publisher["role"] == "roles/pubsub.publisher"
    for grant in (subscriber, publisher):
        assert unwrap(grant["member"]) == "local.pubsub_agent"
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in module_locals["pubsub_agent"]
    # Messages without a relay_topic attribute are read as their subscription's topic.
    assert module_locals["deployment_env"]["RELAY_PUBSUB_TOPICS"] == (
        "${jsonencode({for topic, name in local.subscription_names : name => topic})}"
    )
    assert unwrap(subscription["for_each"]) == "local.subscription_names"
    assert unwrap(subscription["name"]) == "each.value"


def test_one_scheduler_job_per_schedule_and_one_for_the_sweeper(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Each schedule POSTs to /v1/schedules/<name> with OIDC; the sweeper to manifest.sweeper."""
    jobs = resources(module, "google_cloud_scheduler_job")
    schedule = jobs["schedule"]
    names = {s["name"] for s in manifest["schedules"]}
    assert for_each_keys(schedule, manifest, module_locals) == names
    assert unwrap(schedule["schedule"]) == "each.value.cron"
    assert unwrap(schedule["time_zone"]) == "each.value.timezone"
    target = block(schedule, "http_target")
    assert target["http_method"] == "POST"
    assert target["uri"] == "${local.worker_url}/v1/schedules/${each.key}"
    assert _delivery_account(block(target, "oidc_token")["service_account_email"]) == "scheduler"
    assert target["headers"] == {"Content-Type": "application/json"}
    sweeper = jobs["sweeper"]
    assert "for_each" not in sweeper
    assert evaluate(module_locals["sweeper"], manifest, module_locals) == manifest["sweeper"]
    assert unwrap(sweeper["schedule"]) == "local.sweeper.cron"
    sweep_target = block(sweeper, "http_target")
    assert sweep_target["uri"] == "${local.worker_url}${local.sweeper.path}"
    assert "local.sweeper.stale_after_seconds" in sweep_target["body"]
    token = block(sweep_target, "oidc_token")
    assert _delivery_account(token["service_account_email"]) == "scheduler"
    assert sweep_target["headers"] == {"Content-Type": "application/json"}


def test_the_worker_serves_every_path_the_module_calls(manifest: dict[str, Any]) -> None:
    """Tasks, push, schedules and the sweeper reach routes the deployed worker serves."""
    worker = next(f for f in _deployed(manifest).values() if "worker" in f["route_groups"])
    if not worker["routes"]:  # the hand-written manifest lists no routes
        return
    paths = {route["path"] for route in worker["routes"]}
    assert {"/v1/steps", "/v1/events", "/v1/schedules/{name}", manifest["sweeper"]["path"]} <= paths


# --- Firestore ------------------------------------------------------------------------------------


def test_firestore_indexes_and_field_overrides_are_read_from_the_indexes_file(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """The module reads infra/gcp/firestore.indexes.json instead of restating it."""
    path_expr = unwrap(module_locals["firestore_indexes_path"])
    relative = re.search(r'"\$\{path\.module\}/([^"]+)"', path_expr)
    assert relative, path_expr
    assert (MODULE_DIR / relative[1]).resolve() == INDEXES_FILE.resolve()
    assert unwrap(module_locals["firestore_indexes"]) == (
        "jsondecode(file(local.firestore_indexes_path))"
    )
    index = resources(module, "google_firestore_index")["composite"]
    composite = unwrap(module_locals["firestore_composite_indexes"])
    assert composite.startswith("{for index in local.firestore_indexes.indexes :")
    assert unwrap(index["for_each"]) == "local.firestore_composite_indexes"
    assert unwrap(index["collection"]) == "each.value.collectionGroup"
    assert unwrap(index["query_scope"]) == "each.value.queryScope"
    fields = dynamic_blocks(index)["fields"]
    assert unwrap(fields["for_each"]) == "each.value.fields"
    content = block(fields, "content")
    assert unwrap(content["field_path"]) == "fields.value.fieldPath"
    assert unwrap(content["order"]) == "fields.value.order"
    # One resource per index: the for_each key must tell every index of the file apart.
    document = json.loads(INDEXES_FILE.read_text())
    keys = {
        "/".join([i["collectionGroup"], *(f"{f['fieldPath']}:{f['order']}" for f in i["fields"])])
        for i in document["indexes"]
    }
    assert len(keys) == len(document["indexes"])
    overrides = unwrap(module_locals["firestore_field_overrides"])
    assert overrides.startswith("{for override in local.firestore_indexes.fieldOverrides :")
    pairs = {(o["collectionGroup"], o["fieldPath"]) for o in document["fieldOverrides"]}
    assert len(pairs) == len(document["fieldOverrides"])


def test_ttl_field_is_the_one_the_adapter_writes(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """TTL policies cover expires_at of the run and step collections, as the adapter writes."""
    from functions.settings import Settings
    from infra.gcp._firestore_docs import EXPIRES_AT, STEPS_SUBCOLLECTION

    field = resources(module, "google_firestore_field")["override"]
    assert unwrap(field["for_each"]) == "local.firestore_field_overrides"
    assert unwrap(field["field"]) == "each.value.fieldPath"
    ttl = dynamic_blocks(field)["ttl_config"]
    assert unwrap(ttl["for_each"]).startswith("each.value.ttl ?")
    index_config = block(field, "index_config")
    assert unwrap(dynamic_blocks(index_config)["indexes"]["for_each"]) == "each.value.indexes"
    document = json.loads(INDEXES_FILE.read_text())
    collection = Settings.from_env({}).firestore_collection
    ttl_fields = {
        (o["collectionGroup"], o["fieldPath"]) for o in document["fieldOverrides"] if o["ttl"]
    }
    assert ttl_fields == {(collection, EXPIRES_AT), (STEPS_SUBCOLLECTION, EXPIRES_AT)}
    assert {i["collectionGroup"] for i in document["indexes"]} == {collection}
    assert unwrap(module_locals["firestore_collection"]) == (
        "one(distinct([for index in local.firestore_indexes.indexes : index.collectionGroup]))"
    )
    database = resources(module, "google_firestore_database")["relay"]
    assert database["type"] == "FIRESTORE_NATIVE"


# --- IAM, storage, monitoring ---------------------------------------------------------------------


def test_service_accounts_have_least_privilege(module: dict[str, dict[str, Any]]) -> None:
    """Project roles are metrics and logs; Firestore on Relay's database; actAs on tasks only."""
    project_grants = resources(module, "google_project_iam_member")
    assert set(project_grants) == {"function", "firestore"}
    assert locals_(module)["function_project_roles"] == [
        "roles/monitoring.metricWriter",
        "roles/logging.logWriter",
    ]
    account_grants = resources(module, "google_service_account_iam_member")
    assert set(account_grants) == {"enqueuer_act_as_tasks", "pubsub_token_creator"}
    act_as = account_grants["enqueuer_act_as_tasks"]
    assert act_as["role"] == "roles/iam.serviceAccountUser"
    assert unwrap(act_as["for_each"]) == "local.enqueuers"
    # The functions may mint tokens of the tasks account only: never of the scheduler or
    # push accounts, whose routes (schedules, sweep, events) the api must not reach.
    assert _delivery_account(act_as["service_account_id"]) == "tasks"
    token_creator = account_grants["pubsub_token_creator"]
    assert token_creator["role"] == "roles/iam.serviceAccountTokenCreator"
    assert _delivery_account(token_creator["service_account_id"]) == "push"
    assert unwrap(token_creator["member"]) == "local.pubsub_agent"
    enqueue = resources(module, "google_cloud_tasks_queue_iam_member")["enqueuer"]
    assert enqueue["role"] == "roles/cloudtasks.enqueuer"
    assert "local.enqueuers" in json.dumps(enqueue["for_each"])
    assert '"RELAY_TASKS_QUEUE"' in locals_(module)["enqueuers"]
    bucket_grants = resources(module, "google_storage_bucket_iam_member")
    assert set(bucket_grants) == {"io_object_admin"}
    assert references(bucket_grants["io_object_admin"]["bucket"], "google_storage_bucket") == {"io"}
    accounts = resources(module, "google_service_account")
    assert set(accounts) == {"function", "delivery"}
    assert unwrap(accounts["function"]["for_each"]) == "local.functions"


def test_firestore_access_is_conditioned_on_relays_database(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """datastore.user per function, with an IAM condition naming Relay's database only."""
    grant = resources(module, "google_project_iam_member")["firestore"]
    assert grant["role"] == "roles/datastore.user"
    assert unwrap(grant["for_each"]) == "local.functions"
    assert "google_service_account.function[each.key].email" in grant["member"]
    expression = block(grant, "condition")["expression"]
    assert module_locals["firestore_resource_name"] == (
        "projects/${var.project}/databases/${google_firestore_database.relay.name}"
    )
    name = "${local.firestore_resource_name}"
    assert expression == (f'resource.name == "{name}" || resource.name.startsWith("{name}/")'), (
        expression
    )
    # No other grant of a Firestore role: nothing project-wide on the data.
    text = json.dumps(module)
    assert text.count("roles/datastore.") == 1


def test_io_bucket_is_private_versioned_and_expires_outputs(
    module: dict[str, dict[str, Any]],
) -> None:
    """Uniform access, public access prevention, versioning and a delete lifecycle rule."""
    bucket = resources(module, "google_storage_bucket")["io"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert block(bucket, "versioning")["enabled"] is True
    actions = [block(rule, "action")["type"] for rule in blocks(bucket, "lifecycle_rule")]
    assert actions and set(actions) == {"Delete"}
    package = resources(module, "google_storage_bucket_object")["package"]
    assert "filemd5(var.package_path)" in package["name"]


def test_alerts_watch_failed_and_compensated_runs(
    module: dict[str, dict[str, Any]], module_locals: dict[str, Any]
) -> None:
    """Alert policies use the runs_finished metric of core/ports/metrics.py by status."""
    from core.domain.status import RunStatus
    from core.ports.metrics import RUNS_FINISHED

    assert module_locals["runs_finished_metric"] == f"custom.googleapis.com/{RUNS_FINISHED.name}"
    statuses = unwrap(module_locals["alerted_run_statuses"])
    assert set(re.findall(r'"(\w+)"', statuses)) == {"FAILED", "COMPENSATED"}
    assert {"FAILED", "COMPENSATED"} <= {status.value for status in RunStatus}
    descriptor = resources(module, "google_monitoring_metric_descriptor")["runs_finished"]
    assert [label["key"] for label in blocks(descriptor, "labels")] == list(RUNS_FINISHED.labels)
    assert descriptor["metric_kind"] == "CUMULATIVE"
    policy = resources(module, "google_monitoring_alert_policy")["runs"]
    threshold = block(block(policy, "conditions"), "condition_threshold")
    assert 'metric.label.status = \\"${each.key}\\"' in json.dumps(threshold["filter"])
    assert unwrap(policy["notification_channels"]) == "var.alert_notification_channels"


# --- the example, versions, checkov, fmt --------------------------------------------------------


def test_example_calls_the_module_with_every_required_input(
    module: dict[str, dict[str, Any]],
) -> None:
    """examples/gcp calls ../../modules/gcp and passes every input without a default."""
    example = parse_tf_dir(EXAMPLE_DIR)
    call = module_calls(example)["relay"]
    assert call["source"] == "../../modules/gcp"
    required = {name for name, body in variables(module).items() if "default" not in body}
    assert required == {"project", "region", "manifest_path", "package_path"}
    assert required <= set(call)
    assert (EXAMPLE_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_versions_pin_terraform_and_the_google_provider(path: Path) -> None:
    """Terraform >= 1.5 and the google provider's current major (7.x)."""
    (settings,) = terraform_blocks(parse_tf_dir(path))
    assert settings["required_version"] == ">= 1.5"
    (providers,) = (
        settings["required_providers"]
        if isinstance(settings["required_providers"], list)
        else [settings["required_providers"]]
    )
    assert providers["google"] == {"source": "hashicorp/google", "version": "~> 7.0"}


@pytest.mark.parametrize("path", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_checkov_passes_with_reasoned_skips_only(path: Path) -> None:
    """Checkov finds no failed check and no parse error; every skip is inline with a reason."""
    result = run_checkov(path)
    assert result.ok, result.describe()
    assert result.resource_count > 0
    skips = [skip for file in sorted(MODULE_DIR.glob("*.tf")) for skip in checkov_skips(file)]
    assert skips
    for skip in skips:
        assert re.fullmatch(r"CKV_GCP_\d+", skip.check_id), skip
        assert len(skip.reason) > 20, f"{skip.file.name}:{skip.line} skips without a reason"
    skipped = {finding.check_id for finding in result.skipped}
    assert skipped <= {skip.check_id for skip in skips}


@pytest.mark.parametrize("path", [MODULE_DIR, EXAMPLE_DIR], ids=["module", "example"])
def test_terraform_fmt_leaves_the_files_alone(path: Path) -> None:
    """terraform fmt -check finds nothing to rewrite."""
    ok, diff = run_terraform_fmt_check(path)
    assert ok, diff


def test_checkov_flags_the_public_binding_exactly_when_public_api_is_set() -> None:
    """CKV_GCP_102 (no anonymous Cloud Run invoker) passes by default, fails with public_api.

    No skip hides it: the allUsers binding is spelled through var.public_api, which checkov
    evaluates, so the check sees the binding the deployment would create.
    """
    default = run_checkov(MODULE_DIR)
    assert default.ok, default.describe()
    assert "CKV_GCP_102" in {finding.check_id for finding in default.passed}
    assert "CKV_GCP_102" not in {finding.check_id for finding in default.skipped}
    public = run_checkov(MODULE_DIR, {"public_api": True, "api_auth": "api_key"})
    flagged = {(f.check_id, f.resource) for f in public.failed}
    assert flagged == {("CKV_GCP_102", "google_cloud_run_service_iam_member.public_invoker")}


@pytest.mark.parametrize(
    ("values", "accepted"),
    [
        ({"api_invokers": ["serviceAccount:backend@p.iam.gserviceaccount.com"]}, True),
        ({"api_invokers": ["group:team@example.com", "user:a@example.com"]}, True),
        ({"api_invokers": ["allUsers"]}, False),
        ({"api_invokers": ["allAuthenticatedUsers"]}, False),
        (
            {"operators": ["user:ops@example.com", "serviceAccount:ci@p.iam.gserviceaccount.com"]},
            True,
        ),
        ({"operators": ["group:ops@example.com"]}, False),
        ({"operators": ["ops@example.com"]}, False),
        ({"api_auth": "api_key,jwt"}, True),
        ({"api_auth": "platform"}, True),
        ({"api_auth": "none"}, False),
    ],
)
def test_access_variables_refuse_what_would_open_the_api(
    tmp_path: Path, values: dict[str, Any], accepted: bool
) -> None:
    """allUsers is no invoker (public_api is the only way in); operators are users or accounts."""
    error = variable_errors(MODULE_DIR, values, tmp_path)
    assert (error == "") == accepted, error
