"""``relay dev`` as a child process in its own process group, for ``relay demo`` and chaos.

Running the stack as a separate process group is what lets chaos SIGKILL all of it at
once (API, dispatcher, workers) the way a machine dies, and lets every command stop
exactly what it started, by process group id, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import httpx

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
LOG_FILE_NAME: Final = "stack.log"
STOP_GRACE_SECONDS: Final = 15.0
READY_MARK: Final = b"relay dev: API "
"""The banner ``relay dev`` prints once API, workers, dispatcher and sweeper all run."""


def _descendants(root: int) -> list[int]:
    """PIDs of every live process below ``root`` (children, grandchildren...)."""
    try:
        listing = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found: list[int] = []
    frontier = [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def _group_of(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return 0


class StackError(Exception):
    """Raised when the stack does not come up (the message points at its log)."""


class StackProcess:
    """One ``relay dev`` process group on a data directory and port.

    ``start`` may be called again after ``kill``: the new stack reuses the data
    directory and port, as a restarted machine would, and appends to the same log.

    Args:
        data_dir: The stack's RELAY_DATA_DIR (run state, queue, demo services); made
            absolute here, since the stack runs in the project root, not the caller's directory.
        port: Where its HTTP API listens.
        workers: Worker processes of the stack.
        faults: RELAY_FAULTS for every process of the stack ("" for none).
    """

    def __init__(self, *, data_dir: Path, port: int, workers: int, faults: str = "") -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.workers = workers
        self.faults = faults
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the stack's HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the stack's stdout and stderr go."""
        return self.data_dir / LOG_FILE_NAME

    @property
    def is_running(self) -> bool:
        """True while the stack's main process lives."""
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        """The main process's exit code once it ended (None while it runs)."""
        return None if self._process is None else self._process.poll()

    def __enter__(self) -> StackProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, *, timeout_seconds: float = 60.0) -> None:
        """Start the stack and wait until its API answers ``/healthz``.

        Raises:
            StackError: it exited or did not answer in time (it is stopped then).
        """
        if self.is_running:
            raise StackError("the stack is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            RELAY_DATA_DIR=str(self.data_dir),
            RELAY_FAULTS=self.faults,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
            ),
        )
        command = [
            sys.executable,
            "-m",
            "tooling.cli",
            "dev",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--data-dir",
            str(self.data_dir),
        ]
        self._log = self.log_path.open("ab")
        log_start = self._log.tell()
        self._process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches all of it
        )
        self.starts += 1
        try:
            self._wait_ready(timeout_seconds, log_start)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole stack at once, as a power cut would.

        That is the stack's process group and the groups of every process it started:
        ``relay dev`` starts each worker as a session leader (so a Ctrl-C reaches the
        stack first), which puts workers outside the stack's own group.
        """
        process = self._process
        if process is not None:
            groups = {process.pid} | {_group_of(pid) for pid in _descendants(process.pid)}
            for group in sorted(g for g in groups if g > 1):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
            process.wait()
        self._close_log()

    def stop(self, *, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Ask the stack to shut down (SIGTERM to its main process), then make sure.

        Whatever of the group is left after ``grace_seconds`` (or after a clean exit,
        such as a worker the supervisor no longer waited for) is SIGKILLed.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_seconds)
        self.kill()

    def read_log(self) -> str:
        """Everything the stack wrote so far (every start of it)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _wait_ready(self, timeout_seconds: float, log_start: int) -> None:
        """Wait for the banner (workers up, not only the API), then for ``/healthz``."""
        deadline = time.monotonic() + timeout_seconds
        with httpx.Client(base_url=self.url, timeout=2.0, trust_env=False) as client:
            while True:
                code = self.exit_code()
                if code is not None:
                    raise StackError(
                        f"`relay dev` exited with code {code} while starting; see {self.log_path}"
                    )
                if self._printed_banner(log_start):
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get("/healthz").status_code == 200:
                            return
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"`relay dev` did not answer {self.url}/healthz within "
                        f"{timeout_seconds:g}s; see {self.log_path}"
                    )
                time.sleep(0.1)

    def _printed_banner(self, log_start: int) -> bool:
        with self.log_path.open("rb") as handle:
            handle.seek(log_start)
            return READY_MARK in handle.read()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
