"""Worker processes of the local stack: functions-framework targets, restarted when they exit.

``relay dev`` runs its workers exactly as Cloud Run runs a function: ``functions-framework
--asgi --source <file> --target <name>``, one process group each, so a ``crash`` fault or an
import error kills one worker and the supervisor starts another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import httpx

from core.errors import ConfigurationError

log = logging.getLogger("relay.dev")

HOST: Final = "127.0.0.1"
"""Every server of the local stack binds to loopback only: it has no production auth."""
STEPS_PATH: Final = "/v1/steps"

_OUTPUT_LINE_LIMIT: Final = 1024 * 1024
# What gunicorn's arbiter logs when it reaps a worker that died (functions-framework
# --asgi runs the app under gunicorn, whose master respawns the worker by itself).
_GUNICORN_CRASH_MARKERS: Final = (b"exited with code", b"was sent code", b"was sent SIG")


@dataclasses.dataclass
class WorkerProcess:
    """One supervised worker: its slot, current process and port, and restart count."""

    index: int
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    is_ready: bool = False
    restarts: int = 0
    crashes: int = 0

    @property
    def base_url(self) -> str:
        """Where this worker listens."""
        return f"http://{HOST}:{self.port}"

    @property
    def name(self) -> str:
        """How logs refer to this worker."""
        return f"worker-{self.index}"


class WorkerSupervisor:
    """Starts N functions-framework worker processes and keeps them running.

    A worker that exits (a ``crash`` fault, an import error) is started again on a fresh
    port and routed to only once it answers ``/healthz``; one that keeps dying is
    restarted with a growing pause. Each process leads its own process group, so a
    Ctrl-C in the terminal reaches the dev stack only, and the stack stops the workers
    in order (after the dispatcher has finished its in-flight deliveries).

    Args:
        count: How many workers.
        environ: Their environment (data dir, faults, signing key, saga modules).
        on_routes_changed: Called with the ``/v1/steps`` URLs of the ready workers
            whenever that set changes.
        source: The functions-framework source file.
        target: The functions-framework target in ``source`` that serves ``/v1/steps``.
        health_timeout_seconds: How long a starting worker may take to answer.
    """

    def __init__(
        self,
        *,
        count: int,
        environ: Mapping[str, str],
        on_routes_changed: Callable[[list[str]], None],
        source: Path,
        target: str,
        health_timeout_seconds: float = 60.0,
    ) -> None:
        self.workers = [WorkerProcess(index=i + 1) for i in range(count)]
        self._environ = dict(environ)
        self._on_routes_changed = on_routes_changed
        self._source = source
        self._target = target
        self._health_timeout_seconds = health_timeout_seconds
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._first_ready: dict[int, asyncio.Future[None]] = {}
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)

    @property
    def pids(self) -> list[int]:
        """PIDs of the worker processes now running."""
        return [w.process.pid for w in self.workers if w.process and w.process.returncode is None]

    async def start(self) -> None:
        """Start every worker and wait until each answers ``/healthz``.

        Raises:
            ConfigurationError: a worker did not become healthy in time.
        """
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            self._first_ready[worker.index] = loop.create_future()
            task = loop.create_task(self._supervise(worker), name=worker.name)
            task.add_done_callback(_log_crash)
            self._tasks.append(task)
        waiting = list(self._first_ready.values())
        _, pending = await asyncio.wait(waiting, timeout=self._health_timeout_seconds)
        if pending:
            raise ConfigurationError(
                f"{len(pending)} of {len(self.workers)} worker(s) did not answer /healthz "
                f"within {self._health_timeout_seconds:g}s; see their output above "
                f"(command: {' '.join(self._command(0))})"
            )

    async def stop(self, *, timeout_seconds: float = 10.0) -> None:
        """Stop supervising, SIGTERM every worker's process group, SIGKILL stragglers."""
        self._stopping.set()
        processes = [w.process for w in self.workers if w.process is not None]
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in processes]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_seconds)
            for process in processes:
                if process.returncode is None:
                    log.warning("worker pid %d ignored SIGTERM; killing it", process.pid)
                _signal_group(process, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _supervise(self, worker: WorkerProcess) -> None:
        failures = 0
        while not self._stopping.is_set():
            worker.port = free_port()
            process = await asyncio.create_subprocess_exec(
                *self._command(worker.port),
                env=self._environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                limit=_OUTPUT_LINE_LIMIT,
            )
            worker.process = process
            output = asyncio.create_task(self._forward_output(worker, process))
            started = time.monotonic()
            is_healthy = await self._wait_healthy(worker, process)
            if is_healthy:
                worker.is_ready = True
                self._routes_changed()
                first = self._first_ready[worker.index]
                if not first.done():
                    first.set_result(None)
            elif process.returncode is None:
                log.error("%s did not answer /healthz in time; restarting it", worker.name)
                _signal_group(process, signal.SIGKILL)
            code = await process.wait()
            await output
            if worker.is_ready:
                worker.is_ready = False
                self._routes_changed()
            if self._stopping.is_set():
                return
            uptime = time.monotonic() - started
            failures = 0 if is_healthy and uptime > 10 else failures + 1
            pause = 0.0 if failures <= 1 else min(5.0, 0.25 * 2 ** (failures - 2))
            worker.restarts += 1
            log.warning(
                "%s (pid %d, port %d) exited with code %s after %.1fs; restarting%s",
                worker.name,
                process.pid,
                worker.port,
                code,
                uptime,
                f" in {pause:.2g}s" if pause else "",
                extra={"worker": worker.name, "exit_code": code, "restarts": worker.restarts},
            )
            await asyncio.sleep(pause)

    def _command(self, port: int) -> list[str]:
        # ``python -m functions_framework`` is the functions-framework console script
        # run by this interpreter: the same venv, whatever PATH says.
        return [
            sys.executable,
            "-m",
            "functions_framework",
            "--asgi",
            "--source",
            str(self._source),
            "--target",
            self._target,
            "--host",
            HOST,
            "--port",
            str(port),
        ]

    async def _wait_healthy(
        self, worker: WorkerProcess, process: asyncio.subprocess.Process
    ) -> bool:
        deadline = time.monotonic() + self._health_timeout_seconds
        while time.monotonic() < deadline and process.returncode is None:
            with contextlib.suppress(httpx.HTTPError):
                response = await self._client.get(f"{worker.base_url}/healthz")
                if response.status_code == 200:
                    return True
            await asyncio.sleep(0.05)
        return False

    async def _forward_output(
        self, worker: WorkerProcess, process: asyncio.subprocess.Process
    ) -> None:
        """Copy the worker's output to ours, noticing when gunicorn replaced a dead worker.

        Lines are copied unchanged so JSON log lines stay parseable.
        """
        stream = process.stdout
        assert stream is not None
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the limit: pass a chunk through
                line = await stream.read(_OUTPUT_LINE_LIMIT)
            if not line:
                return
            sys.stderr.write(line.decode(errors="replace"))
            sys.stderr.flush()
            if b"Worker (pid:" in line and any(m in line for m in _GUNICORN_CRASH_MARKERS):
                worker.crashes += 1
                log.warning(
                    "%s: a worker process died (%s); gunicorn restarted it",
                    worker.name,
                    line.decode(errors="replace").strip(),
                    extra={"worker": worker.name, "crashes": worker.crashes},
                )

    def _routes_changed(self) -> None:
        self._on_routes_changed([f"{w.base_url}{STEPS_PATH}" for w in self.workers if w.is_ready])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the worker's process group: the functions-framework master and its children.

    Each worker was started as a session leader, so its group id is its PID and the
    signal reaches only processes this stack started.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _log_crash(task: asyncio.Task[None]) -> None:
    """Report a background task that died of an exception instead of losing it silently."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())


def _die_with_parent() -> None:
    """In the forked worker, before exec: ask Linux to SIGTERM it when ``relay dev`` dies.

    Workers lead their own sessions (so Ctrl-C reaches the stack first and the stack
    stops them in order); without this, a SIGKILLed stack would leave them running.
    gunicorn's master forwards the SIGTERM to its worker. Elsewhere this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
