"""The dependency rules of the layout: functions -> core <- infra, and no SDK in core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOUD_SDKS = ("google", "boto3", "botocore", "mangum", "aioboto3")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_core_imports_no_cloud_sdk_adapter_or_entry_point(path: Path) -> None:
    """Modules in core/ import neither cloud SDKs nor infra/ nor functions/."""
    bad = {
        name
        for name in imported_modules(path)
        if name.split(".")[0] in (*CLOUD_SDKS, "infra", "functions")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_adapter_package_imports_another() -> None:
    """Each infra/<backend> package imports only core and its own modules."""
    for package in sorted(
        p for p in (ROOT / "infra").iterdir() if p.is_dir() and p.name != "__pycache__"
    ):
        for path in package.rglob("*.py"):
            others = {
                name
                for name in imported_modules(path)
                if name.startswith("infra.") and not name.startswith(f"infra.{package.name}")
            }
            assert not others, f"{path.relative_to(ROOT)} imports {sorted(others)}"


def test_a_worker_imports_only_the_sagas_it_serves(tmp_path: Path) -> None:
    """With RELAY_SAGAS=onboarding, the engine never imports the order saga or a cloud SDK."""
    program = (
        "import sys\n"
        "from functions._wiring import get_engine\n"
        "engine = get_engine()\n"
        "engine.registry.get('onboarding')\n"
        "print(sorted(m for m in sys.modules if m.startswith('functions.sagas')))\n"
        "sdks = ('google.cloud.', 'google.api_core', 'boto3', 'botocore')\n"
        "print(any(m.startswith(sdks) for m in sys.modules))\n"
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
    assert out == ["['functions.sagas', 'functions.sagas.onboarding']", "False"]
