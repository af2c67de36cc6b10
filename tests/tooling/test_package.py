"""``relay package``: the Cloud Run source archive and the Lambda zip, built and imported.

Each archive is built once per session through the CLI. The AWS builds download wheels
from PyPI (pip's cache makes the second build fast); nothing here skips: without PyPI the
build fails with pip's message and the question whether PyPI is reachable. They are
``slow`` (``make test-fast`` leaves them out); the lock files themselves are checked
offline in test_locks.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.local.runtime.supervisor import free_port
from tooling.cli import main
from tooling.package.archive import ZIP_DATE_TIME
from tooling.package.locks import read_lock

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
AWS_TIMEOUT_SECONDS = 600  # a cold pip cache downloads ~20 MB of wheels per build
aws_build = pytest.mark.slow  # pip installs the Lambda wheels: ~20 s a build, warm cache
TOOLING_DISTRIBUTIONS = ("click", "rich", "httpx", "httpcore", "uvicorn", "aiohttp")
"""The CLI's and the local runtime's libraries (the cli and local extras): never deployed."""


@dataclass(frozen=True)
class Built:
    """An archive ``relay package`` built, with the sha256 it printed."""

    path: Path
    sha256: str
    size_bytes: int


def relay_package(out_dir: Path, *args: str) -> Built:
    """Run ``relay package`` in this process and read what it printed."""
    result = CliRunner().invoke(main, ["package", "--out", str(out_dir), *args])
    assert result.exit_code == 0, f"relay package {' '.join(args)} failed:\n{result.output}"
    fields = dict(re.findall(r"^(\w+)\s+(.+)$", result.stdout, flags=re.MULTILINE))
    return Built(
        path=Path(fields["archive"]),
        sha256=fields["sha256"],
        size_bytes=int(fields["size"].split()[0]),
    )


def extract(archive: Path, into: Path) -> Path:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(into)
    return into


def top_level_names(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as zipped:
        return {name.split("/", 1)[0] for name in zipped.namelist()}


@pytest.fixture(scope="session")
def gcp_archive(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The Cloud Run functions source archive."""
    return relay_package(tmp_path_factory.mktemp("gcp"), "--target", "gcp")


@pytest.fixture(scope="session")
def aws_archive(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The Lambda zip as deployed: CPython 3.12, x86_64."""
    return relay_package(tmp_path_factory.mktemp("aws"), "--target", "aws")


@pytest.fixture(scope="session")
def aws_archive_here(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The Lambda zip for this machine's CPython 3.11, so its compiled wheels import here."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return relay_package(
        tmp_path_factory.mktemp("aws-here"), "--target", "aws", "--python-version", version
    )


@pytest.fixture(scope="session")
def clean_lambda_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with no site packages and no pip: only the standard library."""
    venv = tmp_path_factory.mktemp("clean-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin" / "python"


def lambda_environment() -> dict[str, str]:
    """What Lambda and the deployment set, with an endpoint no AWS call could reach."""
    return {
        "PATH": "/usr/bin:/bin",
        "RELAY_BACKEND": "aws",
        "RELAY_SQS_QUEUE_URL": "http://127.0.0.1:9/000000000000/relay-steps",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


# -- gcp -------------------------------------------------------------------------------


def test_gcp_main_re_exports_the_targets(gcp_archive: Built, tmp_path: Path) -> None:
    """main.py at the archive root imports api, worker, relay and pubsub from the archive."""
    source = extract(gcp_archive.path, tmp_path / "source")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import main, functions\n"
        "assert functions.__file__.startswith(sys.argv[1]), functions.__file__\n"
        "print(sorted(name for name in main.__all__ if callable(getattr(main, name))))"
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-c", code, str(source)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "['api', 'pubsub', 'relay', 'worker']"


def test_functions_framework_serves_the_archive_api_target(
    gcp_archive: Built, tmp_path: Path
) -> None:
    """functions-framework --source main.py --target api (as the buildpack runs it) answers."""
    source = extract(gcp_archive.path, tmp_path / "source")
    port = free_port()
    framework = Path(sys.executable).parent / "functions-framework"
    env = {**os.environ, "RELAY_BACKEND": "memory", "PYTHONDONTWRITEBYTECODE": "1"}
    log_path = tmp_path / "framework.log"
    with log_path.open("wb") as log:
        # Its own process group: the server forks workers, stopped with it by group.
        process = subprocess.Popen(
            [str(framework), "--source", "main.py", "--target", "api", "--port", str(port)],
            cwd=source,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status, body = _get_when_up(f"http://127.0.0.1:{port}/healthz", process)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    stderr = log_path.read_bytes()

    assert status == 200, stderr.decode()[-2000:]
    assert json.loads(body) == {"status": "ok"}


def _get_when_up(url: str, process: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read()
        except OSError:
            time.sleep(0.1)
    return -1, b""


def test_gcp_requirements_pin_runtime_and_gcp_extra_only(gcp_archive: Built) -> None:
    """requirements.txt pins every line, holds functions-framework and Google, no AWS/dev."""
    with zipfile.ZipFile(gcp_archive.path) as zipped:
        text = zipped.read("requirements.txt").decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    names = {line.split("==")[0].lower() for line in lines}

    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line) for line in lines)
    assert {"functions-framework", "google-cloud-firestore", "google-cloud-tasks"} <= names
    assert not names & {"boto3", "botocore", "mangum", "pytest", "mypy", "moto", "ruff"}
    assert lines == read_lock("gcp")


def test_gcp_archive_holds_our_packages_and_infra_gcp_only(gcp_archive: Built) -> None:
    """core/, functions/, infra/gcp (no other backend), main.py, requirements.txt; no caches."""
    with zipfile.ZipFile(gcp_archive.path) as zipped:
        names = zipped.namelist()

    assert top_level_names(gcp_archive.path) == {
        "core",
        "functions",
        "infra",
        "main.py",
        "requirements.txt",
    }
    assert {name.split("/")[1] for name in names if name.startswith("infra/")} == {
        "__init__.py",
        "gcp",
    }
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]


def test_gcp_archive_holds_no_tooling(gcp_archive: Built) -> None:
    """No tooling/, no local runtime (infra/*/runtime), and no CLI library in requirements.txt.

    functions-framework brings click, Flask and uvicorn: those are the platform's.
    """
    with zipfile.ZipFile(gcp_archive.path) as zipped:
        names = zipped.namelist()
        lock = zipped.read("requirements.txt").decode()
    pinned = {line.split("==")[0].lower() for line in lock.splitlines() if "==" in line}

    assert not [n for n in names if n.startswith(("tooling/", "tests/", "bench/"))]
    assert not [n for n in names if n.startswith("infra/") and "/runtime/" in n]
    assert not pinned & {"rich", "httpx", "aiohttp", "pytest", "mypy", "ruff", "moto"}


def test_gcp_archive_is_reproducible(gcp_archive: Built, tmp_path: Path) -> None:
    """A second build of the same tree has the same bytes."""
    assert relay_package(tmp_path, "--target", "gcp").sha256 == gcp_archive.sha256


# -- aws -------------------------------------------------------------------------------


@aws_build
@pytest.mark.timeout(AWS_TIMEOUT_SECONDS)
def test_aws_archive_builds_twice_with_identical_bytes(aws_archive: Built, tmp_path: Path) -> None:
    """Same sources, lock and wheels: the same sha256, printed by relay package."""
    again = relay_package(tmp_path, "--target", "aws")

    assert again.sha256 == aws_archive.sha256
    assert again.path.read_bytes() == aws_archive.path.read_bytes()
    print(f"aws archive: {aws_archive.size_bytes} bytes, sha256 {aws_archive.sha256}")


@aws_build
@pytest.mark.timeout(AWS_TIMEOUT_SECONDS)
def test_aws_archive_holds_no_google_package(aws_archive: Built) -> None:
    """Only the AWS side: no google (nor grpc, protobuf, functions-framework) inside."""
    names = top_level_names(aws_archive.path)

    assert {"core", "functions", "infra", "boto3", "botocore", "mangum", "pydantic"} <= names
    assert not [n for n in names if n.lower().startswith(("google", "grpc", "protobuf"))]
    assert not [n for n in names if n.lower().startswith("functions_framework")]
    with zipfile.ZipFile(aws_archive.path) as zipped:
        infra = {n.split("/")[1] for n in zipped.namelist() if n.startswith("infra/")}
    assert "gcp" not in infra
    assert "aws" in infra


@aws_build
@pytest.mark.timeout(AWS_TIMEOUT_SECONDS)
def test_aws_archive_holds_no_tooling(aws_archive: Built) -> None:
    """No tooling/, no local runtime, and none of the CLI's libraries nor functions-framework."""
    with zipfile.ZipFile(aws_archive.path) as zipped:
        names = zipped.namelist()
    top = {name.lower() for name in top_level_names(aws_archive.path)}
    distributions = {name.split("-", 1)[0].lower() for name in top if name.endswith(".dist-info")}

    assert not top & {"tooling", "tests", "bench", *TOOLING_DISTRIBUTIONS}
    assert not distributions & {*TOOLING_DISTRIBUTIONS, "functions_framework", "flask"}
    assert not [n for n in names if n.startswith("infra/") and "/runtime/" in n]
    assert "functions/aws.py" in names


@aws_build
@pytest.mark.timeout(AWS_TIMEOUT_SECONDS)
def test_aws_archive_entries_are_normalised(aws_archive: Built) -> None:
    """Fixed dates and modes; no bytecode, install records or console scripts."""
    with zipfile.ZipFile(aws_archive.path) as zipped:
        infos = zipped.infolist()

    assert [info.filename for info in infos] == sorted(info.filename for info in infos)
    assert {info.date_time for info in infos} == {ZIP_DATE_TIME}
    assert {info.external_attr >> 16 for info in infos} == {0o100644}
    unstable = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
    assert not [
        info.filename
        for info in infos
        if info.filename.endswith((".pyc", *(f".dist-info/{name}" for name in unstable)))
        or "__pycache__" in info.filename
        or info.filename.startswith("bin/")
    ]


@aws_build
@pytest.mark.timeout(AWS_TIMEOUT_SECONDS)
def test_aws_archive_imports_its_handler_in_a_clean_virtualenv(
    aws_archive_here: Built, clean_lambda_python: Path, tmp_path: Path
) -> None:
    """The handler and every module the worker path loads import from the archive alone."""
    app = extract(aws_archive_here.path, tmp_path / "task")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import functions.aws, functions.wiring, functions.sagas.order\n"
        "import functions.sagas.onboarding, core.scheduling, mangum, boto3\n"
        "import infra.aws.dynamodb, infra.aws.sqs, infra.aws.s3_io, infra.aws.emf\n"
        "import infra.aws.scheduler_delay\n"
        "assert functions.aws.__file__.startswith(sys.argv[1])\n"
        "try:\n"
        "    import google\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('google is importable')\n"
        "print(functions.aws.handler)"
    )
    completed = subprocess.run(
        [str(clean_lambda_python), "-I", "-c", code, str(app)],
        env=lambda_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "function handler" in completed.stdout


@aws_build
@pytest.mark.timeout(AWS_TIMEOUT_SECONDS)
def test_aws_handler_answers_healthz_from_the_clean_virtualenv(
    aws_archive_here: Built, clean_lambda_python: Path, tmp_path: Path
) -> None:
    """An API Gateway v2 GET /healthz through the archive's handler answers 200, offline."""
    app = extract(aws_archive_here.path, tmp_path / "task")
    event = json.loads((EVENTS / "apigw_v2_start.json").read_text())
    event.update(rawPath="/healthz", body="")
    event["requestContext"]["http"].update(method="GET", path="/healthz")
    for header in ("content-length", "content-type", "idempotency-key"):
        event["headers"].pop(header)
    code = (
        "import json, sys, types; sys.path.insert(0, sys.argv[1])\n"
        "import functions.aws\n"
        "context = types.SimpleNamespace(aws_request_id='req-healthz')\n"
        "print(json.dumps(functions.aws.handler(json.loads(sys.argv[2]), context)))"
    )
    completed = subprocess.run(
        [str(clean_lambda_python), "-I", "-c", code, str(app), json.dumps(event)],
        env=lambda_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout.strip().splitlines()[-1])
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok"}


def test_package_without_a_lock_file_names_the_command_to_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing lock file fails with the command that generates it, before any pip call."""
    from tooling.package import locks

    monkeypatch.setattr(locks, "ROOT", tmp_path)
    result = CliRunner().invoke(main, ["package", "--target", "gcp", "--out", str(tmp_path)])

    assert result.exit_code != 0
    assert "make lock" in result.output
