"""``relay dev`` end to end: the stack in a subprocess, driven over real HTTP."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from core.errors import ConfigurationError
from infra.local.runtime.supervisor import free_port
from tooling.dev_stack import DevStack

ROOT = Path(__file__).resolve().parents[2]
SAGA_MODULES = "e2e=tests.e2e.sagas_fixture:saga"
TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED", "CANCELLED"}


def dev_environment(data_dir: Path, *, faults: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_SAGA_MODULES=SAGA_MODULES, RELAY_DATA_DIR=str(data_dir), RELAY_FAULTS=faults)
    return env


class DevProcess:
    """``python -m tooling.dev_stack`` in a subprocess, stopped by PID."""

    def __init__(self, tmp_path: Path, *, args: list[str], env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "relay-dev.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tooling.dev_stack", "--port", str(self.port), *args],
            cwd=ROOT,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.banner = self._read_banner(timeout_seconds=60)

    def _read_banner(self, *, timeout_seconds: float) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_seconds
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=0.2):
                    if self.process.poll() is not None:
                        break
                    continue
                line = self.process.stdout.readline().decode()
                if line.startswith("relay dev:"):
                    return line.strip()
                if not line:
                    break
        self.stop()
        raise AssertionError(f"relay dev did not start; log:\n{self.log_path.read_text()}")

    def stop(self, *, timeout_seconds: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after the timeout; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_dev(tmp_path: Path, data_dir: Path) -> Iterator[list[DevProcess]]:
    """Starts relay dev subprocesses for a test and makes sure none outlives it."""
    started: list[DevProcess] = []
    yield started
    for dev in started:
        dev.stop()


def launch(
    started: list[DevProcess], tmp_path: Path, data_dir: Path, *args: str, faults: str = ""
) -> DevProcess:
    dev = DevProcess(tmp_path, args=list(args), env=dev_environment(data_dir, faults=faults))
    started.append(dev)
    return dev


def start_runs(client: httpx.Client, count: int) -> list[str]:
    run_ids = []
    for i in range(count):
        response = client.post("/v1/sagas/e2e/runs", json={"n": i})
        assert response.status_code == 202, response.text
        run_ids.append(response.json()["run_id"])
    return run_ids


def wait_for_runs(
    client: httpx.Client, run_ids: list[str], *, timeout_seconds: float
) -> dict[str, str]:
    deadline = time.monotonic() + timeout_seconds
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        for run_id in run_ids:
            if statuses.get(run_id) not in TERMINAL:
                response = client.get(f"/v1/runs/{run_id}")
                assert response.status_code == 200, response.text
                statuses[run_id] = response.json()["status"]
        if all(status in TERMINAL for status in statuses.values()):
            return statuses
        time.sleep(0.1)
    raise AssertionError(f"runs not finished after {timeout_seconds}s: {statuses}")


def worker_urls(banner: str) -> list[str]:
    inside = banner.split("workers ", 1)[1].split("(", 1)[1].split(")", 1)[0]
    return [url.strip() for url in inside.split(",")]


@pytest.mark.slow
def test_relay_dev_completes_runs_and_exits_cleanly_on_sigterm(
    tmp_path: Path, data_dir: Path, start_dev: list[DevProcess]
) -> None:
    """Runs started over HTTP complete through the worker processes; SIGTERM exits 0."""
    dev = launch(start_dev, tmp_path, data_dir, "--workers", "2")
    assert f"API {dev.api_url}" in dev.banner
    assert str(data_dir.resolve()) in dev.banner
    workers = worker_urls(dev.banner)
    assert len(workers) == 2
    with httpx.Client(base_url=dev.api_url, timeout=10) as client:
        run_ids = start_runs(client, 10)
        statuses = wait_for_runs(client, run_ids, timeout_seconds=60)
        steps = client.get(f"/v1/runs/{run_ids[0]}").json()["steps"]

    assert set(statuses.values()) == {"COMPLETED"}
    assert [s["status"] for s in steps] == ["SUCCEEDED"] * 3
    assert dev.stop() == 0
    for url in workers:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)


@pytest.mark.slow
def test_relay_dev_completes_runs_while_workers_crash(
    tmp_path: Path, data_dir: Path, start_dev: list[DevProcess]
) -> None:
    """With crash faults killing workers mid-step, every run still completes."""
    dev = launch(start_dev, tmp_path, data_dir, "--workers", "2", faults="*:crash@0.1")
    assert "crash@0.1" in dev.banner
    statuses: dict[str, str] = {}
    with httpx.Client(base_url=dev.api_url, timeout=10) as client:
        # At 10% per attempt a batch of 12 runs sees no crash about 2% of the time; keep
        # adding batches (at most three) until a crash really happened.
        for _ in range(3):
            batch = start_runs(client, 12)
            statuses.update(wait_for_runs(client, batch, timeout_seconds=90))
            if "crashing worker before commit" in dev.log_path.read_text():
                break

    assert set(statuses.values()) == {"COMPLETED"}
    assert dev.stop() == 0
    log = dev.log_path.read_text()
    assert log.count("crashing worker before commit") >= 1
    assert "gunicorn restarted it" in log


@pytest.mark.slow
def test_relay_dev_in_process_runs_steps_without_workers(
    tmp_path: Path, data_dir: Path, start_dev: list[DevProcess]
) -> None:
    """With --in-process the stack completes runs with no worker processes at all."""
    dev = launch(start_dev, tmp_path, data_dir, "--in-process")
    assert "workers in-process" in dev.banner
    with httpx.Client(base_url=dev.api_url, timeout=10) as client:
        statuses = wait_for_runs(client, start_runs(client, 5), timeout_seconds=30)

    assert set(statuses.values()) == {"COMPLETED"}
    assert dev.stop() == 0


def test_dev_stack_runs_in_process_inside_a_test(data_dir: Path) -> None:
    """DevStack starts on a free port in this process, serves the API and stops cleanly."""

    async def scenario() -> dict[str, str]:
        stack = DevStack(
            data_dir=data_dir, port=0, in_process=True, environ=dev_environment(data_dir)
        )
        await stack.start()
        try:
            assert stack.port != 0
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
                run_ids = []
                for i in range(3):
                    response = await client.post("/v1/sagas/e2e/runs", json={"n": i})
                    run_ids.append(response.json()["run_id"])
                await stack.dispatcher.run_until_idle(timeout_seconds=30)
                return {
                    run_id: (await client.get(f"/v1/runs/{run_id}")).json()["status"]
                    for run_id in run_ids
                }
        finally:
            await stack.stop()

    statuses = asyncio.run(scenario())
    assert set(statuses.values()) == {"COMPLETED"}


def test_dev_stack_refuses_to_start_with_a_saga_that_does_not_import(tmp_path: Path) -> None:
    """A bad RELAY_SAGA_MODULES entry stops the stack at startup, naming the saga and why."""
    data_dir = tmp_path / "data"
    env = dev_environment(data_dir)
    env["RELAY_SAGA_MODULES"] = "trip=sagas/missing_trip.py:saga"

    async def scenario() -> None:
        stack = DevStack(data_dir=data_dir, port=0, in_process=True, environ=env)
        await stack.start()

    with pytest.raises(ConfigurationError) as raised:
        asyncio.run(scenario())
    assert "saga 'trip' cannot be loaded" in str(raised.value)
    assert "missing_trip.py" in str(raised.value)
