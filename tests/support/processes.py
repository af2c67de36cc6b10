"""Start a server process on a free loopback port, wait until it answers, stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def port_is_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ServerProcess:
    """A server we started, in its own process group so its children stop with it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after the timeout."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_server(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    ready: Callable[[], bool] | None = None,
    timeout_seconds: float = 60.0,
) -> ServerProcess:
    """Start ``command`` and wait until ``ready()`` (default: the port accepts connections).

    Raises:
        RuntimeError: the process exited or did not become ready in time (log attached).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    server = ServerProcess(name, process, port, log_path)
    check = ready or (lambda: port_is_open(port))
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
        if check():
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} not ready after {timeout_seconds:g}s:\n{server.log_tail()}")
