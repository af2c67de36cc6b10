"""The Firestore and Cloud Tasks emulators for the GCP benchmarks, started and stopped by PID.

Same commands as ``tests/support/gcp.py`` (DESIGN.md, "Real services in tests"): the
Firestore emulator (gcloud, Java) on 127.0.0.1, and the Cloud Tasks emulator from its own
virtualenv (``.venv-tasks-emulator``; ``gcloud-tasks-emulator`` has no host option and
listens on ``[::]``). Each runs in its own process group, stopped by that group's id.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.local.runtime.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]
TASKS_EMULATOR = ROOT / ".venv-tasks-emulator" / "bin" / "gcloud-tasks-emulator"
PROJECT = "relay-bench"
LOCATION = "us-central1"


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.read().strip() == b"Ok")
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@contextmanager
def _server(
    name: str, command: list[str], ready: Callable[[], bool], log_dir: Path
) -> Iterator[None]:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} did not start:\n{tail}")
            time.sleep(0.1)
        yield
    finally:
        stop_group(proc)


@contextmanager
def firestore_emulator(log_dir: Path) -> Iterator[str]:
    """A Firestore emulator on a free loopback port; yields ``host:port``."""
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        raise SystemExit("the Firestore emulator needs gcloud and java on PATH")
    port = free_port()
    command = [gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]
    with _server(
        "firestore-emulator", command, lambda: _answers_ok(f"http://127.0.0.1:{port}/"), log_dir
    ):
        yield f"127.0.0.1:{port}"


@contextmanager
def tasks_emulator(log_dir: Path) -> Iterator[str]:
    """A Cloud Tasks emulator (tasks that fail are dropped, not retried); yields ``host:port``."""
    if not TASKS_EMULATOR.exists():
        raise SystemExit(f"{TASKS_EMULATOR} is missing: run `make tasks-emulator`")
    port = free_port()
    command = [str(TASKS_EMULATOR), "start", f"--port={port}", "--quiet", "--max-retries=0"]
    with _server("tasks-emulator", command, lambda: _port_open(port), log_dir):
        yield f"127.0.0.1:{port}"
