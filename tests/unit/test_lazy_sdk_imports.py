"""Importing an adapter loads no cloud SDK: clients (and their SDKs) load on first use.

A function pays at cold start only for the SDKs it calls (DESIGN.md), so every module of
the cloud adapter packages, and the OIDC verifier of the HTTP app, must import without
loading one. Each module is imported in a fresh interpreter: in a shared one a module
imported earlier could load the SDK and hide a later module that does the same. The
cloud packages are listed from the tree, so a new adapter module is checked without
being named here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CLOUD_SDKS = ("google", "grpc", "boto3", "botocore", "s3transfer")
"""Top-level packages of the Google and AWS client libraries."""

EXTRA_MODULES = {"functions.http.oidc": ("google",)}
"""Modules outside infra/gcp and infra/aws, with the SDKs they load only on use."""


def _cloud_adapter_modules() -> dict[str, tuple[str, ...]]:
    modules: dict[str, tuple[str, ...]] = {}
    for package in ("gcp", "aws"):
        for path in sorted((ROOT / "infra" / package).glob("*.py")):
            if path.name != "__init__.py":
                modules[f"infra.{package}.{path.stem}"] = CLOUD_SDKS
    return modules


MODULES = {**_cloud_adapter_modules(), **EXTRA_MODULES}


def test_the_cloud_packages_are_found() -> None:
    """The listing sees the adapters (a moved package would otherwise check nothing)."""
    assert {"infra.gcp.firestore", "infra.gcp.cloud_tasks", "infra.gcp.gcs_io"} <= set(MODULES)
    assert {"infra.aws.dynamodb", "infra.aws.sqs", "infra.aws.s3_io"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_importing_the_module_loads_no_cloud_sdk(module: str) -> None:
    """A fresh interpreter that imports ``module`` loads none of the cloud SDKs."""
    roots = MODULES[module]
    # The difference, not all of sys.modules: .pth files of the Google libraries put the
    # empty ``google`` namespace packages there at interpreter start.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        f"print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {roots!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {module} loaded {result.stdout.strip()}"
