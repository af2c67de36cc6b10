"""The settings table (``functions/settings.py`` VARIABLES) against the code that reads it.

``Settings.from_env`` reads exactly the variables its attributes declare, an empty
variable reads as unset, and a parser of ``functions/``, ``core/``, ``infra/`` and
``tooling/`` (AST, not grep) finds every environment read and checks that the table
declares it, and that no declared variable is stale.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from functions import settings
from functions.settings import EMULATOR_VARIABLES, VARIABLES

ROOT = Path(__file__).resolve().parents[2]


def test_settings_read_each_variable_of_an_attribute_through_the_table() -> None:
    """Settings.from_env reads exactly the variables that fill its attributes, via the table."""
    read: list[str] = []
    original = settings.read_variable

    def spy(env: Any, name: str) -> str:
        read.append(name)
        return original(env, name)

    settings.read_variable = spy
    try:
        settings.Settings.from_env({})
    finally:
        settings.read_variable = original
    assert sorted(read) == sorted(v.name for v in VARIABLES.values() if v.attribute is not None)
    elsewhere = {v.name for v in VARIABLES.values() if v.attribute is None}
    # Deployment variables no attribute holds are read where used (the AST test below).
    assert {v.name for v in VARIABLES.values() if v.set_by == "deployment"} & elsewhere == {
        "RELAY_LOG_LEVEL",  # functions/logs.py
        "RELAY_LOG_FORMAT",  # functions/logs.py
        "GOOGLE_CLOUD_REGION",  # infra/gcp/monitoring.py
    }


@pytest.mark.parametrize("backend", ["gcp", "aws"])
def test_an_empty_variable_reads_as_unset(backend: str) -> None:
    """Terraform may pass "" for an optional variable: the code then uses its default."""
    names = [v.name for v in VARIABLES.values() if backend in v.platforms]
    empty = {name: "" for name in names} | {"RELAY_BACKEND": backend}

    assert settings.Settings.from_env(empty) == settings.Settings.from_env(
        {"RELAY_BACKEND": backend}
    )


# -- the code reads nothing the table does not declare (parse, don't grep) -------------


ENV_RECEIVERS = {"environ", "env"}
# Reads whose key is not a literal on purpose: the table's own reader.
DYNAMIC_READS_ALLOWED = {("functions/settings.py", "read_variable")}


def _is_environment(node: ast.AST) -> bool:
    if (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    ):
        return True
    return isinstance(node, ast.Name) and node.id in ENV_RECEIVERS


def _module_constants(tree: ast.Module) -> tuple[dict[str, str], dict[str, list[str]]]:
    strings: dict[str, str] = {}
    sequences: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            strings[target.id] = value.value
        elif isinstance(value, ast.Tuple | ast.List) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
        ):
            sequences[target.id] = [str(e.value) for e in value.elts]  # type: ignore[attr-defined]
    return strings, sequences


def _environment_reads(path: Path) -> list[tuple[str, int, str, list[str] | None]]:
    """(module, line, enclosing function, names or None when unresolvable) per read."""
    tree = ast.parse(path.read_text(), filename=str(path))
    strings, sequences = _module_constants(tree)
    loop_names: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.comprehension | ast.For)
            and isinstance(node.target, ast.Name)
            and isinstance(node.iter, ast.Name)
            and node.iter.id in sequences
        ):
            loop_names[node.target.id] = sequences[node.iter.id]

    def resolve(key: ast.AST) -> list[str] | None:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return [key.value]
        if isinstance(key, ast.Name):
            if key.id in strings:
                return [strings[key.id]]
            return loop_names.get(key.id)
        return None

    module = str(path.relative_to(ROOT))
    reads: list[tuple[str, int, str, list[str] | None]] = []

    def visit(node: ast.AST, owner: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            owner = node.name
        key = _environment_key(node)
        if key is not None:
            reads.append((module, node.lineno, owner, resolve(key)))  # type: ignore[attr-defined]
        for child in ast.iter_child_nodes(node):
            visit(child, owner)

    visit(tree, "<module>")
    return reads


def _environment_key(node: ast.AST) -> ast.AST | None:
    """The key expression when ``node`` reads the environment, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        method = node.func
        if (method.attr in ("get", "pop") and _is_environment(method.value)) or (
            method.attr == "getenv"
            and isinstance(method.value, ast.Name)
            and method.value.id == "os"
        ):
            return node.args[0]
    elif (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _is_environment(node.value)
    ):
        return node.slice
    elif (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and _is_environment(node.comparators[0])
    ):
        return node.left
    return None


def _all_environment_reads() -> list[tuple[str, int, str, list[str] | None]]:
    paths = sorted(
        p for top in ("functions", "core", "infra", "tooling") for p in (ROOT / top).rglob("*.py")
    )
    return [read for path in paths for read in _environment_reads(path)]


def test_the_scanner_finds_the_reads_it_must_find() -> None:
    """The parser sees reads through constants, loops and os.environ (a scanner check)."""
    found = {name for *_, names in _all_environment_reads() for name in names or []}

    assert {
        "RELAY_LOG_LEVEL",  # os.environ.get(LOG_LEVEL_ENV, ...) in functions/logs.py
        "RELAY_FAULTS",  # environ.get(FAULTS_ENV, ...) in core/faults.py
        "K_SERVICE",  # environ.get("K_SERVICE") in infra/gcp/monitoring.py
        "AWS_SESSION_TOKEN",  # a comprehension over a constant tuple in infra/aws/_boto.py
        "COLUMNS",  # "COLUMNS" not in os.environ
    } <= found


def test_code_reads_no_environment_variable_the_table_does_not_declare() -> None:
    """Every env var read in functions/, core/, infra/ is declared (or an emulator's)."""
    declared = set(VARIABLES) | set(EMULATOR_VARIABLES)
    undeclared = []
    for module, line, owner, names in _all_environment_reads():
        if names is None:
            if (module, owner) not in DYNAMIC_READS_ALLOWED:
                undeclared.append(
                    f"{module}:{line} in {owner}: a read whose name is not a constant"
                )
            continue
        undeclared += [f"{module}:{line}: {name}" for name in names if name not in declared]

    assert not undeclared, (
        "environment variables read by the code but not declared in "
        "functions/settings.py VARIABLES (declare them: Terraform sets what the table lists):\n"
        + "\n".join(undeclared)
    )


def test_every_declared_variable_is_read_somewhere() -> None:
    """No stale entries: each variable fills a Settings attribute the code uses, or is read."""
    read = {name for *_, names in _all_environment_reads() for name in names or []}
    through_settings = {name for name, v in VARIABLES.items() if v.attribute is not None}
    assert set(VARIABLES) - read - through_settings == set()
    used = {
        node.attr
        for top in ("functions", "core", "infra", "tooling")
        for path in (ROOT / top).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
    }
    attributes = {v.attribute for v in VARIABLES.values() if v.attribute is not None}
    assert attributes - used == set(), "Settings attributes no code reads"
