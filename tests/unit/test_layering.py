"""The rooms of the layout and the rules between them (DESIGN.md, "Layout").

    tooling ──▶ functions ──▶ core ◀── infra
       └─────────────────────────────────┘

``core`` imports no cloud SDK, adapter, entry point or tooling; an ``infra/<backend>``
package imports only ``core`` and itself; ``functions`` (what a deployed function holds)
imports no tooling and no local runtime; nothing imports in a cycle, lazy imports
included; and no module grows past the size where it stops having one job.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "infra", "functions", "tooling")
CLOUD_SDKS = ("google", "boto3", "botocore", "mangum", "aioboto3")
TOOLING_LIBRARIES = ("click", "rich", "httpx", "aiohttp", "uvicorn")
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    module_name(path): path
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _walk_runtime(node: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never imported at run time)."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking_block(child):
            continue
        yield child
        yield from _walk_runtime(child)


def imported_modules(path: Path) -> set[str]:
    """Modules ``path`` imports at run time, at module level or lazily inside functions.

    ``from package import name`` counts as importing ``package.name`` when that is a
    module of ours, else ``package``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            ours = submodules & MODULES.keys()
            names.update(ours)
            if len(ours) < len(submodules):
                names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_core_imports_no_cloud_sdk_adapter_entry_point_or_tooling(path: Path) -> None:
    """Modules in core/ import neither cloud SDKs nor infra/, functions/ or tooling/."""
    bad = {
        name
        for name in imported_modules(path)
        if _top(name) in (*CLOUD_SDKS, "infra", "functions", "tooling")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_adapter_package_imports_another_or_the_edges() -> None:
    """Each infra/<backend> package imports only core and its own modules."""
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("infra."):
            continue
        backend = name.split(".")[1]
        for imported in imported_modules(path):
            other_backend = imported.startswith("infra.") and not imported.startswith(
                f"infra.{backend}"
            )
            if other_backend or _top(imported) in ("functions", "tooling"):
                offenders.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not offenders, "\n".join(offenders)


def test_deployed_code_imports_no_tooling() -> None:
    """functions/ and the adapters it deploys never import tooling, its libraries or a runtime.

    ``infra/<backend>/runtime/`` (dispatcher, worker supervisor, cron loop) is the local
    runtime: tooling of ``relay dev``, so it may use the CLI's libraries.
    """
    offenders = []
    for name, path in MODULES.items():
        is_deployed = _top(name) in ("functions", "core") or (
            name.startswith("infra.") and ".runtime" not in name
        )
        if not is_deployed:
            continue
        for imported in imported_modules(path):
            if _top(imported) in ("tooling", *TOOLING_LIBRARIES) or ".runtime" in imported:
                offenders.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not offenders, "\n".join(offenders)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_lazy_imports_included() -> None:
    """No two modules of ours import each other, directly or through others."""
    graph = {
        name: {imported for imported in imported_modules(path) if imported in MODULES}
        for name, path in MODULES.items()
    }
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a → b → c → a is reported, a leaf is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_is_over_the_size_limit() -> None:
    """Every module of core/, infra/, functions/ and tooling/ stays within 500 lines."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in MODULES.values()
    }
    too_big = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_big, f"split by responsibility: {too_big}"


def test_a_worker_imports_only_the_sagas_it_serves(tmp_path: Path) -> None:
    """With RELAY_SAGAS=onboarding, the engine never imports the order saga or a cloud SDK."""
    program = (
        "import sys\n"
        "from functions.wiring import get_engine\n"
        "engine = get_engine()\n"
        "engine.registry.get('onboarding')\n"
        "print(sorted(m for m in sys.modules if m.startswith('functions.sagas')))\n"
        "sdks = ('google.cloud.', 'google.api_core', 'boto3', 'botocore')\n"
        "print(any(m.startswith(sdks) for m in sys.modules))\n"
        "tools = ('tooling', 'click', 'rich', 'httpx', 'aiohttp', 'uvicorn')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(tools)))\n"
        "engine.close()\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "RELAY_SAGAS": "onboarding",
        "RELAY_DATA_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout.splitlines()
    assert out == ["['functions.sagas', 'functions.sagas.onboarding']", "False", "[]"]
