"""The deployable archives Terraform uploads (``relay package``), built reproducibly.

Two targets (docs/manifest.md, "Deployed layout")::

    gcp   source archive for Cloud Run functions (2nd gen): core/, infra/gcp (and the
          infra modules it imports), functions/, a root main.py re-exporting the
          functions-framework targets, and requirements.txt (runtime + gcp extra,
          pinned); the buildpack installs the requirements at deploy time.
    aws   Lambda zip: the Lambda runtime set (requirements-aws.txt) installed by pip for
          the Lambda platform (manylinux2014, CPython 3.12, x86_64 or arm64, wheels
          only), then core/, infra/aws (and the infra modules it imports), functions/.
          No Google package, and no tooling (tooling/, infra/*/runtime/) in either.

Reproducible: the same sources, lock files and wheels give the same bytes. Entries are
sorted, stamped 1980-01-01 with mode 0644, and nothing that varies between installs is
kept (no ``__pycache__``/``.pyc``; no ``RECORD``, ``INSTALLER``, ``REQUESTED`` or
``direct_url.json`` in ``*.dist-info``; no ``bin/`` console scripts, whose shebangs
name the build machine's interpreter).

The lock files it installs from are written by ``make lock`` and read by
``tooling.package.locks``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from tooling.package.locks import ROOT, PackagingError, name_of, read_lock

Target = Literal["gcp", "aws"]
Arch = Literal["x86_64", "arm64"]

LAMBDA_PYTHON_VERSION: Final = "3.12"
PIP_PLATFORMS: Final[Mapping[str, str]] = {
    "x86_64": "manylinux2014_x86_64",
    "arm64": "manylinux2014_aarch64",
}
ZIP_DATE_TIME: Final = (1980, 1, 1, 0, 0, 0)
FILE_MODE: Final = 0o100644
BOTO3_ONLY: Final = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3")
"""Dropped by ``--without-boto3`` (the Lambda runtime ships its own boto3)."""
_SKIPPED_DIST_INFO: Final = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_SKIPPED_SUFFIXES: Final = (".pyc", ".pyo")
_MAIN_PY: Final = (
    '"""Cloud Run functions entry points: the targets of functions/gcp.py."""\n'
    "\n"
    "from functions.gcp import api, pubsub, relay, worker\n"
    "\n"
    '__all__ = ["api", "pubsub", "relay", "worker"]\n'
)


@dataclass(frozen=True, slots=True)
class Package:
    """A built archive.

    Attributes:
        target: ``gcp`` or ``aws``.
        path: The zip file.
        size_bytes: Its size.
        sha256: Hex digest of its bytes (the same for the same inputs).
        entries: Number of files inside.
    """

    target: str
    path: Path
    size_bytes: int
    sha256: str
    entries: int


def build_package(
    target: Target,
    out_dir: Path,
    *,
    python_version: str = LAMBDA_PYTHON_VERSION,
    arch: Arch = "x86_64",
    include_boto3: bool = True,
) -> Package:
    """Build the archive of ``target`` into ``out_dir``.

    Args:
        target: ``gcp`` (source archive for buildpacks) or ``aws`` (Lambda zip).
        out_dir: Where the zip (and, for aws, the pip build directory) goes.
        python_version: aws only: the CPython whose wheels pip installs.
        arch: aws only: ``x86_64`` or ``arm64`` (Lambda architectures).
        include_boto3: aws only: bundle the pinned boto3 instead of the runtime's.

    Returns:
        The archive with its size and sha256.

    Raises:
        PackagingError: a lock file is missing, or pip could not install the wheels.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if target == "gcp":
        files = dict(_gcp_files())
        name = "relay-gcp.zip"
    else:
        files = dict(_aws_files(out_dir, python_version, arch, include_boto3=include_boto3))
        suffix = "" if include_boto3 else "-without-boto3"
        name = f"relay-aws-{arch}-py{python_version}{suffix}.zip"
    path = out_dir / name
    data = write_zip(files)
    path.write_bytes(data)
    return Package(
        target=target,
        path=path,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        entries=len(files),
    )


def write_zip(files: Mapping[str, bytes]) -> bytes:
    """A zip of ``files`` (archive name -> content) that depends on nothing else."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.create_system = 3  # Unix, so external_attr carries the mode
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name], compresslevel=9)
    return buffer.getvalue()


# -- what goes in -----------------------------------------------------------------------


def _gcp_files() -> Iterator[tuple[str, bytes]]:
    yield from _project_files(infra_packages=_infra_closure("gcp"))
    yield "main.py", _MAIN_PY.encode()
    lock = read_lock("gcp")
    header = (
        "# Relay on Cloud Run functions: the runtime and the gcp extra, pinned "
        "(requirements-gcp.txt).\n"
    )
    yield "requirements.txt", (header + "\n".join(lock) + "\n").encode()


def _aws_files(
    out_dir: Path, python_version: str, arch: Arch, *, include_boto3: bool
) -> Iterator[tuple[str, bytes]]:
    lock = read_lock("aws")
    if not include_boto3:
        lock = [line for line in lock if name_of(line) not in BOTO3_ONLY]
    site = _pip_install(out_dir, lock, python_version=python_version, arch=arch)
    ours = {"core", "infra", "functions", "tooling"}
    for path in sorted(site.rglob("*")):
        relative = path.relative_to(site)
        if relative.parts[0] in ours:
            raise PackagingError(f"a dependency installs {relative.parts[0]}/, a name of ours")
        if path.is_file() and _is_kept(relative):
            yield relative.as_posix(), path.read_bytes()
    yield from _project_files(infra_packages=_infra_closure("aws"))


def _project_files(*, infra_packages: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """core/, functions/ and the named infra/ sub-packages, without caches, tests or tooling.

    ``infra/<backend>/runtime/`` is the local runtime (dispatcher, worker supervisor, cron
    loop): tooling of ``relay dev``, never part of a deployed function.
    """
    roots = [ROOT / "core", ROOT / "functions"]
    roots += [ROOT / "infra" / name for name in sorted(infra_packages)]
    yield "infra/__init__.py", (ROOT / "infra" / "__init__.py").read_bytes()
    for root in roots:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(ROOT)
            hidden = any(part.startswith(".") for part in relative.parts)  # editor, OS files
            if (
                path.is_file()
                and _is_kept(relative)
                and not hidden
                and "tests" not in relative.parts
                and "runtime" not in relative.parts
            ):
                yield relative.as_posix(), path.read_bytes()


def _is_kept(relative: Path) -> bool:
    parts = relative.parts
    if "__pycache__" in parts or relative.suffix in _SKIPPED_SUFFIXES or parts[0] == "bin":
        return False
    return not (
        len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in _SKIPPED_DIST_INFO
    )


def _infra_closure(start: str) -> set[str]:
    """``start`` and every infra sub-package its modules import, transitively (parsed)."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        package = pending.pop()
        if package in seen:
            continue
        seen.add(package)
        for path in (ROOT / "infra" / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "infra" and len(parts) > 1:
                        pending.append(parts[1])
    return seen


def _pip_install(out_dir: Path, lock: list[str], *, python_version: str, arch: Arch) -> Path:
    """Install ``lock`` for the Lambda platform into a fresh directory under ``out_dir``."""
    build = out_dir / f"build-aws-{arch}-py{python_version}"
    shutil.rmtree(build, ignore_errors=True)
    site = build / "site"
    requirements = build / "requirements.txt"
    build.mkdir(parents=True)
    requirements.write_text("\n".join(lock) + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",
        "--no-warn-script-location",
        "--target",
        str(site),
        "--platform",
        PIP_PLATFORMS[arch],
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "-r",
        str(requirements),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise PackagingError(
            f"pip could not install the Lambda dependencies for {PIP_PLATFORMS[arch]} / "
            f"CPython {python_version} (exit {completed.returncode}); is PyPI reachable "
            f"from this machine?\n{tail}"
        )
    return site
