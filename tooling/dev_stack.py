"""``relay dev``: the whole stack on one machine, on the embedded (SQLite) backend.

One process serves the HTTP API, runs the queue dispatcher and the sweeper, and
supervises N worker processes, each the same functions-framework target a Cloud Run
function runs (``functions/gcp.py``, target ``worker``)::

    relay dev ──┬── uvicorn: the full API on 127.0.0.1:PORT
                ├── Dispatcher: SQLite queue ──signed POST /v1/steps──> workers
                ├── sweeper: re-drives runs that made no progress
                ├── background tasks (the cron loop hooks in here)
                └── supervisor: functions-framework --target worker, xN, restarted on exit

``--in-process`` skips the workers and hands messages to the engine in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import uvicorn

import functions
from core.errors import ConfigurationError, EngineError
from core.faults import FaultKind, FaultPlan
from functions.settings import Settings
from infra.local.runtime.supervisor import HOST, WorkerSupervisor
from tooling.dev_auth import auth_description, check_exposure, dev_authenticator

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from core.engine.engine import Engine
    from functions.http.auth import DeliveryVerifier
    from functions.http.callers import Authenticator
    from infra.local.runtime.dispatcher import Dispatcher, HttpDelivery

log = logging.getLogger("relay.dev")

WORKER_SOURCE: Final = Path(functions.__file__).resolve().parent / "gcp.py"
WORKER_TARGET: Final = "worker"

BackgroundTask = Callable[["Engine"], Awaitable[None]]
"""A coroutine function run beside the stack from start to stop (cancelled at stop).

``run_dev`` passes the local scheduler here (``infra.local.runtime.cron.run_cron_loop``).
"""


class _Server(uvicorn.Server):
    """Uvicorn without its signal handling: the dev stack owns SIGINT/SIGTERM.

    ``uvicorn.Server.serve`` re-raises a captured signal after shutdown, which would end
    the process with the signal's status instead of the clean exit ``relay dev`` owes.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signal handling to ``run_dev``."""
        yield


class DevStack:
    """The local stack of ``relay dev``: API server, dispatcher, sweeper, workers.

    Usable from tests: ``await stack.start()``, talk to ``stack.api_url``, then
    ``await stack.stop()``.

    Args:
        data_dir: Where the SQLite database, signing key and outputs live.
        port: API port; 0 picks a free one (see ``api_url``).
        host: Address the API binds. On a loopback address the run API is open unless
            ``RELAY_API_AUTH`` is set; on any other it requires credentials and the stack
            refuses to start without them (``check_exposure``). Workers stay on 127.0.0.1.
        workers: Worker processes (ignored with ``in_process``).
        in_process: Deliver to the engine in this process instead of to workers.
        environ: The environment settings come from and workers inherit
            (``os.environ`` when None); ``RELAY_DATA_DIR`` and ``RELAY_BACKEND`` are set
            from ``data_dir`` and to ``local``.
        background_tasks: Extra coroutine functions run from start to stop, each given
            the engine (the scheduler's cron loop).
        concurrency: Deliveries in flight at once.
        sweep_interval_seconds: How often the sweeper looks for stalled runs.
        stale_after_seconds: How long a run may make no progress before the sweeper
            re-drives it.
        dispatch_deadline_seconds: Longest one HTTP delivery may take. Kept well below
            Cloud Tasks' 10 minutes because it bounds how long messages leased by a
            stack that was SIGKILLed stay hidden after a restart. A step that runs
            longer is not harmed: the worker finishes and commits it, and the
            redelivery meets the step's lease and is told to retry later.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int = 8080,
        host: str = HOST,
        workers: int = 2,
        in_process: bool = False,
        environ: Mapping[str, str] | None = None,
        background_tasks: Sequence[BackgroundTask] = (),
        concurrency: int = 32,
        sweep_interval_seconds: float = 5.0,
        stale_after_seconds: float = 30.0,
        dispatch_deadline_seconds: float = 60.0,
    ) -> None:
        if not in_process and workers < 1:
            raise ConfigurationError("relay dev needs at least one worker, or --in-process")
        self.data_dir = data_dir.resolve()
        self.port = port
        self.host = host
        self.worker_count = 0 if in_process else workers
        self.is_in_process = in_process
        env = dict(os.environ if environ is None else environ)
        env["RELAY_DATA_DIR"] = str(self.data_dir)
        env["RELAY_BACKEND"] = "local"
        self.environ = env
        self.settings = Settings.from_env(env)
        self.faults = FaultPlan.parse(self.settings.faults)
        self._background_tasks = list(background_tasks)
        self._concurrency = concurrency
        self._sweep_interval_seconds = sweep_interval_seconds
        self._stale_after_seconds = stale_after_seconds
        self._dispatch_deadline_seconds = dispatch_deadline_seconds
        self._engine: Engine | None = None
        self._dispatcher: Dispatcher | None = None
        self._supervisor: WorkerSupervisor | None = None
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- public --------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The API's base URL (the bound port once started)."""
        host = HOST if self.host in ("0.0.0.0", "") else self.host
        if host == "::":
            host = "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def engine(self) -> Engine:
        """The engine of this process (API, sweeper, in-process deliveries)."""
        if self._engine is None:
            raise RuntimeError("DevStack is not started")
        return self._engine

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher, for its counters."""
        if self._dispatcher is None:
            raise RuntimeError("DevStack is not started")
        return self._dispatcher

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the running worker processes (empty in-process)."""
        return self._supervisor.pids if self._supervisor else []

    def banner(self) -> str:
        """The one startup line: API URL, data dir, workers and faults."""
        if self._supervisor is None:
            workers = "in-process"
        else:
            urls = ", ".join(w.base_url for w in self._supervisor.workers)
            workers = f"{self.worker_count} ({urls})"
        return (
            f"relay dev: API {self.api_url} | data {self.data_dir} | workers {workers}"
            f" | run API auth: {self.auth_description()} | faults: {self.faults.describe()}"
        )

    def auth_description(self) -> str:
        """How run API callers authenticate on this stack (for the banner)."""
        return auth_description(self.settings, host=self.host)

    async def start(self) -> None:
        """Bind the API port, start the workers, the dispatcher, the sweeper and the API.

        Raises:
            ConfigurationError: the port is taken, a worker did not start, or the API
                would be reachable beyond this machine without credentials.
        """
        await asyncio.to_thread(self.check_exposure)
        self._socket = _bind(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        try:
            await self._start_parts()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop in dependency order; safe to call twice and after a failed start.

        Background tasks first, then the dispatcher (in-flight deliveries finish and
        their acks are flushed while the workers still run), then the workers, then
        the API server, and last the engine's database.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._dispatcher is not None:
            await self._dispatcher.stop(timeout_seconds=10.0)
        if self._supervisor is not None:
            await self._supervisor.stop()
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._server_task, return_exceptions=True)
            self._server_task = None
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
            self._dispatcher = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.close)

    async def wait_closed(self) -> None:
        """Return when the API server stops by itself (a fatal server error)."""
        if self._server_task is not None:
            await asyncio.shield(self._server_task)

    # -- parts ---------------------------------------------------------------------

    async def _start_parts(self) -> None:
        from functions.http.verifiers import verifier_for
        from infra.local.runtime.dispatcher import Dispatcher, HttpDelivery, InProcessDelivery
        from infra.local.sqlite_queue import SQLiteTaskQueue

        engine = self._engine = await asyncio.to_thread(self._build_engine)
        # Import every served saga now: a broken module or a bad RELAY_SAGA_MODULES entry
        # stops the stack with one clear line, instead of a 500 on the first request.
        await asyncio.to_thread(engine.registry.loaded)
        queue = engine.queue
        if not isinstance(queue, SQLiteTaskQueue):  # build_engine on RELAY_BACKEND=local
            raise ConfigurationError(f"relay dev needs the SQLite queue, got {type(queue)}")
        key = await asyncio.to_thread(self.settings.signing_key_bytes)
        # This stack is the only dispatcher of its data dir: leases still held are those of
        # a previous stack that was killed, and would hide their messages until expiry.
        released = await asyncio.to_thread(queue.release_all_leases)
        if released:
            log.info("released %d message lease(s) left by a previous stack", released)
        if self.is_in_process:
            delivery: InProcessDelivery | HttpDelivery = InProcessDelivery(
                engine, concurrency=self._concurrency
            )
        else:
            delivery = HttpDelivery(
                [],
                key,
                timeout_seconds=self._dispatch_deadline_seconds,
                max_connections=self._concurrency * 2,
            )
        self._dispatcher = Dispatcher(
            queue,
            delivery,
            concurrency=self._concurrency,
            faults=self.faults,
            dispatch_deadline_seconds=self._dispatch_deadline_seconds,
            # Acks are flushed within milliseconds of a response; a few seconds of
            # margin is plenty and keeps the post-crash hiding time short.
            lease_margin_seconds=5.0,
        )
        verifier = await asyncio.to_thread(verifier_for, self.settings)
        authenticator = dev_authenticator(self.settings, host=self.host, store=engine.store)
        await self._start_api(build_api_app(engine, verifier, authenticator))
        if isinstance(delivery, HttpDelivery):
            self._supervisor = WorkerSupervisor(
                count=self.worker_count,
                environ=self.environ,
                on_routes_changed=delivery.set_urls,
                source=WORKER_SOURCE,
                target=WORKER_TARGET,
            )
            await self._supervisor.start()
        await self._dispatcher.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweep_forever(), name="relay-sweeper"))
        for background in self._background_tasks:
            name = getattr(background, "__name__", "background")
            self._tasks.append(loop.create_task(_logged(background, engine), name=name))

    def check_exposure(self) -> None:
        """Refuse to serve the run API beyond loopback without credentials.

        Raises:
            ConfigurationError: naming the fix (see ``tooling/dev_auth.py``).
        """
        check_exposure(self.settings, host=self.host, data_dir=self.data_dir)

    def _build_engine(self) -> Engine:
        from functions.wiring import build_engine

        # Crash faults end the process that runs the step. Workers may die (the
        # supervisor restarts them); the dev stack itself must not, in-process included.
        return build_engine(
            dataclasses.replace(self.settings, faults=_without_crashes(self.settings.faults))
        )

    async def _start_api(self, app: ASGIApp) -> None:
        assert self._socket is not None
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = _Server(config)
        self._server_task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket]), name="relay-api"
        )
        while not self._server.started:
            if self._server_task.done():
                self._server_task.result()
                raise ConfigurationError(f"the API server on {self.api_url} stopped during startup")
            await asyncio.sleep(0.01)

    async def _sweep_forever(self) -> None:
        """Run the sweeper every interval; its work per pass is bounded (see sweeper.py)."""
        engine = self.engine
        while True:
            await asyncio.sleep(self._sweep_interval_seconds)
            try:
                report = await asyncio.to_thread(
                    engine.sweeper.sweep, stale_after_seconds=self._stale_after_seconds
                )
            except EngineError as exc:
                log.warning(
                    "sweep failed; trying again in %gs: %s", self._sweep_interval_seconds, exc
                )
                continue
            if report.redriven:
                log.info(
                    "sweeper re-drove %d stalled run(s)",
                    report.redriven,
                    extra={"sweep": report.to_json()},
                )


def build_api_app(
    engine: Engine, verifier: DeliveryVerifier, authenticator: Authenticator
) -> ASGIApp:
    """The full API (public, worker and admin routes) served by ``relay dev``.

    ``verifier`` is ``verifier_for(settings)``: the HMAC key and the nonce store that
    ``relay dev`` shares with its worker processes; ``authenticator`` decides who may call
    the run API (open on loopback unless ``RELAY_API_AUTH`` says otherwise).
    """
    from functions.http.app import ALL_ROUTES, create_app

    return create_app(
        engine=lambda: engine,
        verifier=verifier,
        authenticator=authenticator,
        include=ALL_ROUTES,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is another relay dev "
            "running? pick another port with --port (or another address with --host)"
        ) from exc
    return sock


def _without_crashes(spec: str) -> str:
    """``RELAY_FAULTS`` minus its ``crash`` rules (kept: every other rule and the seed)."""
    kept = [
        item
        for item in spec.split(";")
        if item.strip()
        and not any(rule.kind is FaultKind.CRASH for rule in FaultPlan.parse(item).rules)
    ]
    return ";".join(kept)


async def _logged(task: BackgroundTask, engine: Engine) -> None:
    try:
        await task(engine)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task %s failed", getattr(task, "__name__", task))


async def _serve(stack: DevStack) -> None:
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await stack.start()
        print(stack.banner(), flush=True)
        stopped = asyncio.ensure_future(stop_requested.wait())
        closed = asyncio.ensure_future(stack.wait_closed())
        await asyncio.wait([stopped, closed], return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopped, closed):
            waiter.cancel()
        log.info("relay dev stopping")
    finally:
        await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_dev(port: int, workers: int, data_dir: Path, in_process: bool, host: str = HOST) -> None:
    """Run the dev stack in the foreground until SIGINT or SIGTERM, then stop cleanly.

    Raises:
        ConfigurationError: the port is taken, a worker does not start, or the
            environment's settings are invalid.
    """
    from functions.logs import configure_logging

    configure_logging()
    # httpx logs every request at INFO: one line per delivery would drown the stack's own.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from infra.local.runtime.cron import run_cron_loop

    stack = DevStack(
        data_dir=data_dir,
        port=port,
        host=host,
        workers=workers,
        in_process=in_process,
        background_tasks=[run_cron_loop],
    )
    asyncio.run(_serve(stack))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tooling.dev_stack``: the same as ``relay dev``, without the CLI package."""
    parser = argparse.ArgumentParser(prog="python -m tooling.dev_stack", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Settings.from_env().data_dir
    try:
        run_dev(
            port=args.port,
            workers=args.workers,
            data_dir=data_dir,
            in_process=args.in_process,
            host=args.host,
        )
    except EngineError as exc:
        print(f"relay dev: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
