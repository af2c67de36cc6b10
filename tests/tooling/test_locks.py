"""The lock files (``make lock``) and what each make target installs from them. Offline.

Four locks, each resolved by ``uv pip compile`` from the extras its header names:
requirements.txt (``make demo``), requirements-dev.txt (``make test``), and the two
deployment locks, requirements-gcp.txt and requirements-aws.txt (``relay package``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tooling.package.locks import LOCK_FILES, PackagingError, name_of, read_lock

ROOT = Path(__file__).resolve().parents[2]
DEMO_LOCK = "requirements.txt"
DEV_LOCK = "requirements-dev.txt"
LOCKS = (DEMO_LOCK, DEV_LOCK, LOCK_FILES["gcp"], LOCK_FILES["aws"])
TEST_TOOLS = {"pytest", "pytest-timeout", "hypothesis", "mypy", "ruff", "moto"}
CLI_AND_LOCAL = {"click", "rich", "httpx", "uvicorn", "aiohttp", "functions-framework"}


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None


@dataclass(frozen=True)
class Lock:
    """A lock file: the uv command in its header and its pins."""

    file: str
    command: str
    pins: tuple[Pin, ...]

    @property
    def extras(self) -> list[str]:
        return re.findall(r"--extra (\S+)", self.command)

    @property
    def python_version(self) -> str | None:
        """The CPython the lock was resolved for; None for a universal lock (>= 3.11)."""
        found = re.search(r"--python-version (\S+)", self.command)
        return found.group(1) if found else None

    def versions(self, name: str) -> set[Version]:
        return {pin.version for pin in self.pins if pin.name == name}


@cache
def load(file: str) -> Lock:
    text = (ROOT / file).read_text()
    commands = re.findall(r"^#\s+(uv pip compile .*)$", text, flags=re.MULTILINE)
    assert len(commands) == 1, f"{file}: no `uv pip compile` command in its header"
    pins = []
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            parsed = Requirement(requirement)
            (specifier,) = parsed.specifier
            assert specifier.operator == "==", f"{file}: {requirement} is not an exact pin"
            name = canonicalize_name(parsed.name)
            pins.append(Pin(name, Version(specifier.version), parsed.marker))
    return Lock(file=file, command=commands[0], pins=tuple(pins))


def project() -> dict[str, list[Requirement]]:
    """pyproject.toml's base dependencies (under "") and extras, as requirements."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {"": table["dependencies"], **table["optional-dependencies"]}
    return {name: [Requirement(text) for text in texts] for name, texts in extras.items()}


def requirements_of(extras: list[str]) -> list[Requirement]:
    """The base dependencies and ``extras``, with the extras they name of relay itself."""
    table = project()
    found: list[Requirement] = []
    pending = ["", *extras]
    seen: set[str] = set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in table[extra]:
            if requirement.name == "relay":
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("file", LOCKS)
def test_a_lock_pins_every_requirement_of_its_extras(file: str) -> None:
    """Each dependency of the extras it was resolved from is pinned within its range."""
    lock = load(file)
    requirements = requirements_of(lock.extras)

    assert lock.extras, f"{file} names no extra in its uv command"
    for requirement in requirements:
        versions = lock.versions(canonicalize_name(requirement.name))
        assert versions, f"{file} does not pin {requirement} (make lock)"
        assert all(requirement.specifier.contains(v, prereleases=True) for v in versions), (
            f"{file} pins {requirement.name} at {versions}, outside {requirement.specifier}"
        )


@pytest.mark.parametrize("file", LOCKS)
def test_a_lock_says_what_it_is_and_how_to_make_it_again(file: str) -> None:
    """The header names the file, `make lock`, and the exact uv command, from pyproject.toml."""
    text = (ROOT / file).read_text()

    assert text.startswith(f"# {file}: ")
    assert "`make lock`" in text.splitlines()[1]
    assert load(file).command.startswith("uv pip compile pyproject.toml ")
    assert load(file).command.endswith(f"-o {file}")


def test_the_locks_agree_on_every_version() -> None:
    """A distribution has one version across the locks (python-dateutil was at two).

    The demo and deployment locks are resolved with the dev lock as constraints, so what is
    deployed and demonstrated is what the tests ran. Only the universal dev lock may fork
    a version by marker (networkx differs below and above CPython 3.12, for moto's cfn-lint).
    """
    dev = load(DEV_LOCK)
    for file in (DEMO_LOCK, LOCK_FILES["gcp"], LOCK_FILES["aws"]):
        for pin in load(file).pins:
            assert pin.version in dev.versions(pin.name), (
                f"{file} pins {pin.name}=={pin.version}, {DEV_LOCK} {dev.versions(pin.name)}"
            )
    unmarked: dict[str, set[Version]] = {}
    for file in LOCKS:
        for pin in load(file).pins:
            if pin.marker is None:
                unmarked.setdefault(pin.name, set()).add(pin.version)
    assert {name: v for name, v in unmarked.items() if len(v) > 1} == {}
    assert unmarked["python-dateutil"] == {Version("2.9.0.post0")}


def test_deployment_locks_are_for_cpython_312_and_hold_only_their_cloud() -> None:
    """gcp: Google and functions-framework; aws: boto3 and mangum; no CLI library in aws."""
    gcp = {pin.name for pin in load(LOCK_FILES["gcp"]).pins}
    aws = {pin.name for pin in load(LOCK_FILES["aws"]).pins}

    assert load(LOCK_FILES["gcp"]).python_version == "3.12"
    assert load(LOCK_FILES["aws"]).python_version == "3.12"
    assert not aws & CLI_AND_LOCAL
    assert not [name for name in aws if name.startswith(("google", "grpc", "protobuf", "flask"))]
    # functions-framework brings click, Flask and uvicorn: the platform's, not the CLI's.
    assert not gcp & {"rich", "httpx", "aiohttp", "boto3", "botocore", "mangum"}
    assert not (gcp | aws) & TEST_TOOLS


def test_the_demo_lock_holds_no_cloud_sdk_and_no_test_tool() -> None:
    """make demo installs the runtime, the CLI and the local runtime, nothing else."""
    demo = {pin.name for pin in load(DEMO_LOCK).pins}

    assert demo >= CLI_AND_LOCAL
    assert not demo & (TEST_TOOLS | {"boto3", "botocore", "mangum", "grpcio", "protobuf"})
    assert not [name for name in demo if name.startswith("google")]


def test_read_lock_gives_bare_pins_and_refuses_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv's annotations are dropped; a line that is not an exact pin names make lock."""
    from tooling.package import locks

    assert read_lock("aws") == [f"{p.name}=={p.version}" for p in load(LOCK_FILES["aws"]).pins]
    assert [name_of(line) for line in read_lock("aws")][:2] == ["annotated-types", "anyio"]
    monkeypatch.setattr(locks, "ROOT", tmp_path)
    (tmp_path / LOCK_FILES["aws"]).write_text("# header\nboto3>=1.34  # via relay\n")

    with pytest.raises(PackagingError, match=r"requirements-aws.txt:2: 'boto3>=1.34'.*make lock"):
        read_lock("aws")


def make_dry_run(target: str) -> str:
    """The commands ``make`` would run for ``target`` from scratch (nothing is run)."""
    make = shutil.which("make")
    assert make, "make is needed (make demo / make test)"
    completed = subprocess.run(
        [make, "--dry-run", "--always-make", "--no-print-directory", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout


def test_make_demo_installs_the_demo_lock_and_no_test_tool() -> None:
    """No dev lock, no Cloud Tasks emulator, checkov or Terraform before the demo runs."""
    commands = make_dry_run("demo")

    assert "-r requirements.txt" in commands
    assert "--no-deps -e ." in commands
    assert "relay demo" in commands
    for other in ("requirements-dev.txt", "gcloud-tasks-emulator", "checkov", "terraform"):
        assert other not in commands


def test_make_test_installs_the_dev_lock_and_the_tool_virtualenvs() -> None:
    """make test installs the rest: the dev lock, the emulator and the Terraform tools."""
    commands = make_dry_run("test")

    for needed in ("-r requirements-dev.txt", "gcloud-tasks-emulator", "checkov", "ruff", "mypy"):
        assert needed in commands


def test_a_changed_lock_installs_again() -> None:
    """The install stamps depend on their lock and on pyproject.toml."""
    make = shutil.which("make")
    assert make
    for lock, stamp in ((DEMO_LOCK, ".installed-demo"), (DEV_LOCK, ".installed-dev")):
        for changed in (lock, "pyproject.toml"):
            completed = subprocess.run(
                [
                    make,
                    "--dry-run",
                    "--no-print-directory",
                    f"--what-if={changed}",
                    f".venv/{stamp}",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert f"-r {lock}" in completed.stdout, (changed, completed.stdout)


DEMO_MODULES = (
    "tooling.cli",
    "tooling.demo",
    "tooling.dev_stack",
    "tooling.local_stack",
    "infra.local.runtime.dispatcher",
    "infra.local.runtime.supervisor",
    "infra.local.runtime.cron",
    "functions.gcp",  # the local workers serve its targets under functions-framework
)


_DISTRIBUTIONS_LOADED = """
import importlib, json, sys, sysconfig
from pathlib import Path

at_start = set(sys.modules)  # site's .pth hooks (the editable install's finder, ...)
for name in sys.argv[1:]:
    importlib.import_module(name)
from functions.wiring import build_engine, get_settings

build_engine(get_settings())
site = Path(sysconfig.get_paths()["purelib"])
new = [sys.modules[name] for name in set(sys.modules) - at_start]
files = {Path(module.__file__) for module in new if getattr(module, "__file__", None)}
paths = {file.relative_to(site).as_posix() for file in files if file.is_relative_to(site)}
loaded = []
for record in site.glob("*.dist-info/RECORD"):
    if paths & {line.split(",", 1)[0] for line in record.read_text().splitlines()}:
        loaded.append(record.parent.name.split("-", 1)[0])
print(json.dumps(sorted(loaded)))
"""
"""Imports the modules named in argv and builds the local engine, then prints the
distributions (dist-info names) whose module files loaded from site-packages, read from
their RECORD files; this project's own modules are not in site-packages."""


def test_what_the_demo_imports_is_in_the_demo_lock(tmp_path: Path) -> None:
    """The CLI, the dev stack and the workers it starts load only demo-lock distributions.

    The engine is built as ``relay dev`` builds it (the local backend); a cloud SDK or a
    test tool imported on that path would make ``make demo`` fail on a fresh clone.
    """
    environment = {"RELAY_BACKEND": "local", "RELAY_DATA_DIR": str(tmp_path / "relay")}
    completed = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTIONS_LOADED, *DEMO_MODULES],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    loaded = {canonicalize_name(name) for name in json.loads(completed.stdout)}
    demo = {pin.name for pin in load(DEMO_LOCK).pins}

    assert {"click", "rich", "functions-framework", "pydantic"} <= loaded  # it sees them
    assert loaded - demo == set()
