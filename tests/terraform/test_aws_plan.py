"""terraform/modules/aws planned by Terraform itself, with the AWS provider of the offline mirror.

The machine image has Terraform on the PATH and the AWS provider in a filesystem mirror
(docs: ../shared/DESIGN.md); a CLI config of the test's own makes ``terraform init`` work
offline, and the provider's STS endpoint points at moto server (the one call a plan makes:
``aws_caller_identity``). What this adds to the parsed-HCL checks: the provider's schema
accepts every argument (``terraform validate``), and the plan shows what a deployment would
really get: every route behind AWS_IAM by default (or JWT, or NONE only with
``public_api``), event rules that name their sources, the bus policy, and the
preconditions that refuse an open configuration.

The mirror holds provider 5.100.0 while the module asks for ``~> 6.0``: the copy planned here
pins the mirror's version in an override file and reads the region under its 5.x name
(``data.aws_region.current.name``; 6.x calls it ``region``), the only difference the module
meets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import is_ci
from tests.terraform.hcl import TERRAFORM_DIR
from tests.terraform.manifests import bundle_manifest

MODULE_DIR = TERRAFORM_DIR / "modules" / "aws"
MIRROR_ROOTS = (Path("/opt/tf-plugins"), Path("/usr/share/terraform/plugins"))
PROVIDER = Path("registry.terraform.io/hashicorp/aws")
PLAN_TIMEOUT_S = 240
# One plan starts the AWS provider (~15 s alone, more on a busy machine).
pytestmark = pytest.mark.timeout(PLAN_TIMEOUT_S + 60)
EVENT_SOURCES = ["com.example.payments"]
PUBLISHERS = ["arn:aws:iam::123456789012:role/payments"]
PATTERN = "payments.*.confirmed"


def _unavailable(reason: str) -> None:
    if is_ci():
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _mirror() -> tuple[Path, str] | None:
    """The filesystem mirror's root and the AWS provider version it holds."""
    for root in MIRROR_ROOTS:
        versions = sorted(p.name for p in (root / PROVIDER).glob("*") if p.is_dir())
        if versions:
            return root, versions[-1]
    return None


@dataclass(frozen=True)
class Workspace:
    """An initialised root module that calls a copy of modules/aws."""

    root: Path
    env: dict[str, str]
    plans: dict[str, tuple[dict[str, Any] | None, str]] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["terraform", *args, "-no-color"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PLAN_TIMEOUT_S,
            check=False,
        )

    def plan(self, cases: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The JSON plan of one module instance per case, or None and Terraform's errors."""
        key = json.dumps(cases, sort_keys=True)
        if key not in self.plans:
            self.plans[key] = self._plan("-".join(cases), {"cases": cases})
        return self.plans[key]

    def _plan(self, name: str, variables: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        var_file = self.root / f"{name}.tfvars.json"
        var_file.write_text(json.dumps(variables), encoding="utf-8")
        plan_file = f"{name}.tfplan"
        planned = self.run(
            "plan", "-input=false", "-refresh=false", f"-var-file={var_file}", f"-out={plan_file}"
        )
        if planned.returncode != 0:
            return None, planned.stdout + planned.stderr
        shown = self.run("show", "-json", plan_file)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        return json.loads(shown.stdout), ""


ROOT_MODULE = """\
provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true

  endpoints {
    sts = "%(moto)s"
  }
}

# One module instance per case (its name is the instance key and the name prefix), so
# one plan, one provider start, covers every configuration that must be accepted.
variable "cases" {
  type = any
}

module "relay" {
  source   = "./aws"
  for_each = var.cases

  name_prefix      = each.key
  manifest_path    = "${path.root}/manifest.json"
  package_path     = "${path.root}/package.zip"
  public_api       = try(each.value.public_api, false)
  api_auth         = try(each.value.api_auth, "platform")
  jwt_issuer       = try(each.value.jwt_issuer, null)
  jwt_audience     = try(each.value.jwt_audience, [])
  event_sources    = try(each.value.event_sources, [])
  event_publishers = try(each.value.event_publishers, [])
}
"""

ISSUER = "https://issuer.example.com/"
ACCEPTED: dict[str, dict[str, Any]] = {
    "default": {"event_sources": EVENT_SOURCES, "event_publishers": PUBLISHERS},
    "jwt": {
        "event_sources": EVENT_SOURCES,
        "event_publishers": PUBLISHERS,
        "jwt_issuer": ISSUER,
        "jwt_audience": ["relay-api"],
    },
    "public": {
        "event_sources": EVENT_SOURCES,
        "event_publishers": PUBLISHERS,
        "public_api": True,
        "api_auth": "api_key",
    },
}
"""The configurations a deployment may use, planned together (``accepted_plan``)."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[Workspace]:
    """modules/aws (provider pinned to the mirror's) under a root, initialised offline."""
    if shutil.which("terraform") is None:
        _unavailable("no terraform binary on the PATH (the machine image has 1.11.4)")
    mirror = _mirror()
    if mirror is None:
        _unavailable(f"no AWS provider in a filesystem mirror under {MIRROR_ROOTS}")
    assert mirror is not None
    mirror_root, version = mirror
    root = tmp_path_factory.mktemp("aws-plan")
    module = root / "aws"
    shutil.copytree(MODULE_DIR, module, ignore=shutil.ignore_patterns(".terraform*"))
    if version.startswith("5."):
        main = module / "main.tf"
        text = main.read_text(encoding="utf-8")
        assert "data.aws_region.current.region" in text
        main.write_text(text.replace("aws_region.current.region", "aws_region.current.name"))
    (module / "versions_override.tf").write_text(
        'terraform {\n  required_providers {\n    aws = {\n      source  = "hashicorp/aws"\n'
        f'      version = "{version}"\n    }}\n  }}\n}}\n',
        encoding="utf-8",
    )
    manifest = bundle_manifest()
    manifest["events"] = [{"pattern": PATTERN, "saga": "order", "starts": False, "resumes": "x"}]
    manifest["topics"] = ["payments"]
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with zipfile.ZipFile(root / "package.zip", "w") as package:
        package.writestr("functions/__init__.py", "")
    (root / "main.tf").write_text(ROOT_MODULE % {"moto": moto_endpoint}, encoding="utf-8")
    (root / "cli.tfrc").write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror_root}"\n'
        '    include = ["registry.terraform.io/hashicorp/aws"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(root / "cli.tfrc"),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
        TF_DATA_DIR=str(root / ".terraform"),
    )
    workspace = Workspace(root=root, env=env)
    init = workspace.run("init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    yield workspace


def _planned(plan: dict[str, Any], case: str, resource: str) -> list[dict[str, Any]]:
    """The ``after`` values of the planned creations of ``resource`` in one case's instance."""
    prefix = f'module.relay["{case}"].{resource}'
    return [
        change["change"]["after"]
        for change in plan["resource_changes"]
        if change["address"].startswith(prefix) and "create" in change["change"]["actions"]
    ]


def _refused(workspace: Workspace, case: dict[str, Any]) -> str:
    """Terraform's error text for a configuration that must fail the plan (whitespace joined)."""
    plan, error = workspace.plan({"refused": case})
    assert plan is None, "the plan was accepted"
    return re.sub(r"\s+", " ", error)


@pytest.fixture(scope="module")
def accepted_plan(workspace: Workspace) -> dict[str, Any]:
    """The plan of every ACCEPTED configuration, each in its own module instance."""
    plan, error = workspace.plan(ACCEPTED)
    assert plan is not None, error
    return plan


def test_the_module_validates_against_the_provider_schema(workspace: Workspace) -> None:
    """``terraform validate`` accepts every argument with the mirror's AWS provider."""
    validated = workspace.run("validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_by_default_every_route_requires_aws_iam(accepted_plan: dict[str, Any]) -> None:
    """The default plan: each HTTP API route AWS_IAM, no authorizer."""
    routes = _planned(accepted_plan, "default", "aws_apigatewayv2_route.public")
    manifest_routes = {
        f"{method} {route['path']}"
        for function in bundle_manifest()["functions"]
        if function["public"] and function["deploy"] and function["aws"]
        for route in function["routes"]
        for method in route["methods"]
    }
    assert {route["route_key"] for route in routes} == manifest_routes
    assert {route["authorization_type"] for route in routes} == {"AWS_IAM"}
    assert _planned(accepted_plan, "default", "aws_apigatewayv2_authorizer") == []


def test_jwt_issuer_puts_every_route_behind_the_jwt_authorizer(
    accepted_plan: dict[str, Any],
) -> None:
    """With jwt_issuer and jwt_audience, a JWT authorizer with them guards every route."""
    routes = _planned(accepted_plan, "jwt", "aws_apigatewayv2_route.public")
    assert routes and {route["authorization_type"] for route in routes} == {"JWT"}
    (authorizer,) = _planned(accepted_plan, "jwt", "aws_apigatewayv2_authorizer.jwt")
    assert authorizer["authorizer_type"] == "JWT"
    assert authorizer["jwt_configuration"] == [{"audience": ["relay-api"], "issuer": ISSUER}]


def test_public_api_is_the_only_way_to_unauthenticated_routes(
    accepted_plan: dict[str, Any],
) -> None:
    """NONE appears only in the public_api instance (with the app checking callers)."""
    expected = {"default": "AWS_IAM", "jwt": "JWT", "public": "NONE"}
    assert set(expected) == set(ACCEPTED)
    for case in ACCEPTED:
        routes = _planned(accepted_plan, case, "aws_apigatewayv2_route.public")
        assert routes and {route["authorization_type"] for route in routes} == {expected[case]}


def test_event_rules_match_named_sources_on_a_bus_only_publishers_may_use(
    accepted_plan: dict[str, Any],
) -> None:
    """The rule's pattern requires the named sources; the bus policy denies other principals."""
    (bus,) = _planned(accepted_plan, "default", "aws_cloudwatch_event_bus.relay")
    (rule,) = _planned(accepted_plan, "default", "aws_cloudwatch_event_rule.topic")
    assert rule["event_bus_name"] == bus["name"] == "default-events"
    pattern = json.loads(rule["event_pattern"])
    assert pattern["source"] == EVENT_SOURCES
    assert pattern["detail-type"] == [{"wildcard": PATTERN}]
    (policy,) = _planned(accepted_plan, "default", "aws_cloudwatch_event_bus_policy.relay")
    document = json.loads(policy["policy"])
    deny = next(s for s in document["Statement"] if s["Effect"] == "Deny")
    assert deny["Action"] == "events:PutEvents"
    assert deny["Principal"] == "*"
    assert deny["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": PUBLISHERS[0]}}
    assert deny["Resource"].endswith(":event-bus/default-events")


def test_public_api_with_platform_auth_is_refused(workspace: Workspace) -> None:
    """public_api = true while the app trusts the platform (no authorizer) fails the plan."""
    error = _refused(workspace, {**ACCEPTED["default"], "public_api": True})
    assert "would trust every caller" in error, error


def test_half_a_jwt_configuration_is_refused(workspace: Workspace) -> None:
    """An issuer without an audience fails the plan instead of falling back to another mode."""
    error = _refused(workspace, {**ACCEPTED["default"], "jwt_issuer": ISSUER})
    assert "Set both jwt_issuer and jwt_audience" in error, error


@pytest.mark.parametrize("missing", ["event_sources", "event_publishers"])
def test_event_patterns_without_sources_or_publishers_are_refused(
    workspace: Workspace, missing: str
) -> None:
    """Events in the manifest and no named sources (or publishers): the plan fails, saying so."""
    case = {name: value for name, value in ACCEPTED["default"].items() if name != missing}
    error = _refused(workspace, case)
    assert f"set {missing}" in error, error
