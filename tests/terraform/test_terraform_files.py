"""Generic checks over every file in terraform/: it parses, checkov passes, fmt leaves it alone.

Each check is also run on a throwaway module in tmp_path that must make it fail, so a check
that silently passes everything is caught.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.conftest import WriteModule
from tests.terraform.hcl import (
    TERRAFORM_DIR,
    HclParseError,
    block,
    blocks,
    checkov_skips,
    dynamic_blocks,
    locals_,
    module_calls,
    outputs,
    parse_tf_dir,
    parse_tf_file,
    parse_tf_files,
    references,
    resource_types,
    resources,
    run_checkov,
    run_terraform_fmt_check,
    tf_dirs,
    tf_files,
    unwrap,
    variables,
)

# Collected at import time so each file (and each module) is its own test id.
TF_FILES = tf_files()
TF_DIRS = tf_dirs()
CHECK_ID = re.compile(r"^CKV2?_[A-Z0-9]+_\d+$")


def _rel(path: Path) -> str:
    return str(path.relative_to(TERRAFORM_DIR))


def _existing(paths: list[Path]) -> list[Path]:
    """The collected files still there (a file removed since collection is not an error)."""
    return [p for p in paths if p.is_file()]


# --- the repository's terraform/ tree ----------------------------------------------------------


@pytest.mark.parametrize("path", TF_FILES, ids=[_rel(p) for p in TF_FILES])
def test_tf_file_parses(path: Path) -> None:
    """Every .tf file under terraform/ parses with python-hcl2."""
    parse_tf_files(_existing(TF_FILES))  # one subprocess for the tree; later calls hit the cache
    parse_tf_file(path)


def _without_descriptions(value: Any) -> Any:
    """The value with every ``description`` attribute dropped (prose may say ``var.x``)."""
    if isinstance(value, dict):
        return {k: _without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    return value


@pytest.mark.parametrize("module", TF_DIRS, ids=[_rel(p) or "." for p in TF_DIRS])
def test_module_references_are_declared(module: Path) -> None:
    """Every var.X and local.X a module uses is declared in it; local module sources exist."""
    parse_tf_files(_existing(TF_FILES))
    parsed = parse_tf_dir(module)
    used = _without_descriptions(parsed)
    assert sorted(references(used, "var") - set(variables(parsed))) == [], "undeclared variables"
    assert sorted(references(used, "local") - set(locals_(parsed))) == [], "undefined locals"
    for name, call in module_calls(parsed).items():
        source = str(call.get("source", ""))
        if source.startswith(("./", "../")):
            assert (module / source).is_dir(), f"module {name!r}: source {source} is missing"


def test_checkov_passes_on_terraform_tree() -> None:
    """Checkov, offline, finds no failed check and no file it cannot parse under terraform/."""
    result = run_checkov(TERRAFORM_DIR)
    assert result.ok, result.describe()
    parsed = parse_tf_files(_existing(TF_FILES)).values()
    if any(isinstance(body, dict) and body.get("resource") for body in parsed):
        assert result.resource_count > 0, f"checkov saw no resource: {result.describe()}"


@pytest.mark.parametrize("path", TF_FILES, ids=[_rel(p) for p in TF_FILES])
def test_every_checkov_skip_is_inline_with_a_reason(path: Path) -> None:
    """Each ``checkov:skip=`` in terraform/ names one check and says why after the colon."""
    for skip in checkov_skips(path):
        where = f"{_rel(path)}:{skip.line}"
        assert CHECK_ID.match(skip.check_id), f"{where}: {skip.check_id!r} is not a check id"
        assert skip.reason, f"{where}: checkov:skip={skip.check_id} gives no reason"


def test_checkov_skips_in_the_tree_are_the_inline_ones() -> None:
    """Every check checkov skipped under terraform/ comes from an inline comment with a reason."""
    inline = {skip.check_id for path in TF_FILES for skip in checkov_skips(path) if skip.reason}
    result = run_checkov(TERRAFORM_DIR)
    unexplained = [str(f) for f in result.skipped if f.check_id not in inline]
    assert unexplained == [], "skipped without an inline reason:\n" + "\n".join(unexplained)


def test_terraform_fmt_reports_no_file() -> None:
    """``terraform fmt -check -recursive`` (Terraform 1.0.3) would rewrite no file in terraform/."""
    ok, diff = run_terraform_fmt_check(TERRAFORM_DIR)
    assert ok, f"terraform fmt would change these files (run `terraform fmt -recursive`):\n{diff}"


# --- the machinery, proven on throwaway modules -----------------------------------------------

SAMPLE = """\
locals {
  queues = { for q in var.queues : q.name => q if q.enabled }
  names  = [for k, v in local.queues : upper(k)]
  greet  = "hello ${var.region}-%{if var.loud}!%{endif}"
  policy = <<-EOT
    allow ${var.region}
  EOT
}

variable "region" {
  type        = string
  default     = "us-central1"
  description = "Region for var.region"
}

variable "queues" {
  type = list(object({ name = string, enabled = bool }))
}

variable "loud" {
  type    = bool
  default = false
}

resource "google_cloud_tasks_queue" "steps" {
  for_each = local.queues
  name     = each.key
  location = var.region

  retry_config {
    max_attempts = 5
  }

  dynamic "rate_limits" {
    for_each = local.names
    content {
      max_dispatches_per_second = rate_limits.value
    }
  }
}

module "child" {
  source = "./child"
  region = var.region
}

output "queue_names" {
  value = [for q in google_cloud_tasks_queue.steps : q.name]
}
"""


def test_parse_normalises_blocks_and_expressions(write_module: WriteModule) -> None:
    """Blocks merge into {name: body}; expressions read "${...}"; literals keep their type."""
    module = write_module({"main.tf": SAMPLE, "child/main.tf": 'variable "region" {}\n'})
    parsed = parse_tf_dir(module)
    assert list(parsed) == ["main.tf"]
    steps = resources(parsed, "google_cloud_tasks_queue")["steps"]
    assert steps["for_each"] == "${local.queues}"
    assert unwrap(steps["location"]) == "var.region"
    assert block(steps, "retry_config") == {"max_attempts": 5}
    assert blocks(steps, "missing") == []
    assert dynamic_blocks(steps)["rate_limits"]["for_each"] == "${local.names}"
    assert set(locals_(parsed)) == {"queues", "names", "greet", "policy"}
    assert locals_(parsed)["greet"].startswith("hello ${var.region}")
    assert locals_(parsed)["policy"].strip() == "allow ${var.region}"
    assert variables(parsed)["region"]["default"] == "us-central1"
    assert variables(parsed)["region"]["type"] == "string"
    assert set(outputs(parsed)) == {"queue_names"}
    assert module_calls(parsed)["child"]["source"] == "./child"
    assert resource_types(parsed) == {"google_cloud_tasks_queue": ["steps"]}
    assert references(steps, "var") == {"region"}
    assert references(parsed, "local") == {"queues", "names"}
    assert unwrap("a-${var.x}-${var.y}") == "a-${var.x}-${var.y}"
    assert unwrap("${{for k in x : k => 1}}") == "{for k in x : k => 1}"
    json.dumps(parsed)  # plain JSON data all the way down


def test_references_check_catches_an_undeclared_variable(write_module: WriteModule) -> None:
    """A module using var.missing has a reference the declared variables do not cover."""
    module = write_module({"main.tf": 'output "o" {\n  value = var.missing\n}\n'})
    parsed = parse_tf_dir(module)
    assert references(parsed, "var") - set(variables(parsed)) == {"missing"}


def test_a_resource_declared_in_two_files_is_an_error(write_module: WriteModule) -> None:
    """The same resource address in two files of a module raises, naming both files."""
    text = 'resource "aws_sqs_queue" "q" {\n  name = "q"\n}\n'
    module = write_module({"a.tf": text, "b.tf": text})
    with pytest.raises(ValueError, match=r"a\.tf and b\.tf"):
        resources(parse_tf_dir(module), "aws_sqs_queue")


def test_parse_error_names_the_file(write_module: WriteModule) -> None:
    """A .tf file python-hcl2 cannot read makes parse_tf_dir raise with the file and position."""
    module = write_module({"ok.tf": 'variable "a" {}\n', "broken.tf": "locals {\n  a = \n"})
    with pytest.raises(HclParseError) as caught:
        parse_tf_dir(module)
    assert caught.value.path.name == "broken.tf"
    assert "line" in caught.value.message


def test_empty_module_parses_to_nothing(write_module: WriteModule) -> None:
    """A directory with no .tf file parses to {} (terraform/ before the modules land)."""
    assert parse_tf_dir(write_module({})) == {}


BAD_BUCKET = 'resource "aws_s3_bucket" "open" {\n  bucket = "relay-open"\n}\n'
SKIPPED_BUCKET = """\
resource "aws_sqs_queue" "plain" {
  #checkov:skip=CKV_AWS_27:fixture: proves an inline skip with a reason is honoured
  name = "relay-plain"
}
"""


def test_checkov_reports_failures_skips_and_parse_errors(write_module: WriteModule) -> None:
    """A bucket with no encryption or access block fails, a skip is kept, a bad file counts."""
    module = write_module(
        {"bucket.tf": BAD_BUCKET, "queue.tf": SKIPPED_BUCKET, "broken.tf": "locals {\n  a =\n"}
    )
    result = run_checkov(module)
    assert not result.ok
    failed = {(f.check_id, f.resource) for f in result.failed}
    assert ("CKV2_AWS_6", "aws_s3_bucket.open") in failed  # no public access block
    skipped = {f.check_id: f.suppress_comment for f in result.skipped}
    assert (skipped.get("CKV_AWS_27") or "").startswith("fixture: proves")
    assert result.parsing_error_count == 1
    assert [Path(p).name for p in result.parsing_errors] == ["broken.tf"]
    assert "FAILED CKV2_AWS_6 aws_s3_bucket.open" in result.describe()


def test_checkov_on_an_empty_tree_passes(write_module: WriteModule) -> None:
    """Checkov on a directory with no .tf file reports nothing and is ok."""
    result = run_checkov(write_module({"README.md": "nothing yet\n"}))
    assert result.ok, result.describe()
    assert result.failed == [] and result.resource_count == 0


def test_skip_without_reason_is_found(write_module: WriteModule) -> None:
    """checkov_skips finds a skip with no reason and one with a reason, with their lines."""
    module = write_module(
        {
            "main.tf": (
                'resource "aws_sqs_queue" "q" {\n'
                "  #checkov:skip=CKV_AWS_27\n"
                "  # checkov:skip=CKV_AWS_999:  \n"
                "  #checkov:skip=CKV2_AWS_6:kept private by the bucket policy\n"
                "}\n"
            )
        }
    )
    skips = checkov_skips(module / "main.tf")
    assert [(s.line, s.check_id, s.reason) for s in skips] == [
        (2, "CKV_AWS_27", ""),
        (3, "CKV_AWS_999", ""),
        (4, "CKV2_AWS_6", "kept private by the bucket policy"),
    ]


def test_fmt_reports_a_badly_formatted_file(write_module: WriteModule) -> None:
    """terraform fmt -check names a misaligned file in a subdirectory and shows its diff."""
    module = write_module(
        {
            "good.tf": 'variable "a" {\n  type = string\n}\n',
            "sub/bad.tf": 'resource "aws_sqs_queue" "q" {\nname = "q"\n  tags = {a=1}\n}\n',
        }
    )
    ok, diff = run_terraform_fmt_check(module)
    assert not ok
    assert "sub/bad.tf" in diff and "+  name = " in diff
    assert "good.tf" not in diff


def test_fmt_accepts_a_formatted_tree(write_module: WriteModule) -> None:
    """terraform fmt -check passes on formatted files and on a directory with none."""
    formatted = write_module({"a.tf": 'variable "a" {\n  type = string\n}\n'})
    assert run_terraform_fmt_check(formatted) == (True, "")
    assert run_terraform_fmt_check(write_module({})) == (True, "")


# --- issue 10: the two access checks are never skipped -----------------------------------------

NEVER_SKIPPED = ("CKV_GCP_102", "CKV_AWS_309")
"""Anonymous Cloud Run invokers and API Gateway routes without authorization (issue 10)."""


def _checkov_configuration_files() -> list[Path]:
    """Every file that could tell checkov to skip a check: config files, CI, the test helper."""
    root = TERRAFORM_DIR.parent
    candidates = [
        *root.glob(".checkov*"),
        *TERRAFORM_DIR.rglob(".checkov*"),
        root / "Makefile",
        root / "pyproject.toml",
        root / ".pre-commit-config.yaml",
        *(root / ".ci").glob("*"),
        *(root / ".github").rglob("*.y*ml"),
        Path(__file__).with_name("hcl.py"),
    ]
    return [path for path in candidates if path.is_file()]


def test_the_access_checks_are_skipped_nowhere() -> None:
    """CKV_GCP_102 and CKV_AWS_309 appear in no inline skip, no config file, no checkov call."""
    for path in TF_FILES:
        for skip in checkov_skips(path):
            assert skip.check_id not in NEVER_SKIPPED, f"{_rel(path)}:{skip.line} skips it"
    files = _checkov_configuration_files()
    assert Path(__file__).with_name("hcl.py") in files
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for check in NEVER_SKIPPED:
            assert check not in text, f"{path} names {check}"
    result = run_checkov(TERRAFORM_DIR)
    assert not {f.check_id for f in result.skipped} & set(NEVER_SKIPPED)
    passed = {f.check_id for f in result.passed}
    assert set(NEVER_SKIPPED) <= passed, "checkov no longer evaluates the access checks"
