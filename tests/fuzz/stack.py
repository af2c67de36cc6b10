"""What the fuzz tests share: ``relay dev`` in a subprocess, its database, signing, the tally.

``FuzzStack`` starts ``python -m tooling.dev_stack`` (``relay dev`` without the CLI) on
127.0.0.1 with the embedded backend and stops it by process group. ``Database`` reads its
SQLite file (read-only) to prove that a rejected request wrote nothing. ``Tally`` counts
what the suite sent and found, for the summary line ``make test`` prints.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core import signing
from infra.local.runtime.supervisor import free_port
from tests.fuzz.fuzz_sagas import SAGA_MODULES, SAGA_NAMES
from tests.support.processes import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = frozenset({"COMPLETED", "COMPENSATED", "FAILED", "CANCELLED"})
SIGNED_ROUTES = ("/v1/steps", "/v1/events", "/v1/schedules/", "/v1/sweep")
"""Path prefixes of the signed delivery routes (retry and cancel: see ``is_signed``)."""


def is_signed(path: str) -> bool:
    """True for the routes a delivery signature authenticates (deliveries, retry, cancel)."""
    return path.startswith(SIGNED_ROUTES) or path.endswith(("/retry", "/cancel"))


# -- the tally ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What the fuzz suite sent and found; every figure but ``requests`` should be 0."""

    requests: int = 0
    server_errors: int = 0
    schema_violations: int = 0
    stray_writes: int = 0
    forged_or_replayed_accepted: int = 0
    notes: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    """How often each operation got each status (``"POST /v1/steps 200"``), for the report."""
    known: Counter[str] = field(default_factory=Counter)
    """The part of each finding counted in tests marked xfail (another branch fixes them)."""
    is_in_known_failure: bool = False
    """Set while a test marked xfail runs (``conftest.py``)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to the named counters (thread-safe: concurrency tests count too)."""
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)
                if self.is_in_known_failure and name != "requests":
                    self.known[name] += count

    def answered(self, operation: str, status: int) -> None:
        """Count one answer of ``operation`` (``"METHOD path"``)."""
        with self._lock:
            self.answers[f"{operation} {status}"] += 1

    def note(self, text: str) -> None:
        """Remember one finding for the report (the first 50 are kept)."""
        with self._lock:
            if len(self.notes) < 50:
                self.notes.append(text)

    def summary(self) -> str:
        """The line the lead quotes (with how many came from tests marked xfail)."""
        line = (
            f"fuzz summary: {self.requests} requests sent, {self.server_errors} responses >= 500, "
            f"{self.schema_violations} schema violations, {self.stray_writes} stray writes, "
            f"{self.forged_or_replayed_accepted} forged/replayed deliveries accepted"
        )
        known = ", ".join(f"{count} {name}" for name, count in sorted(self.known.items()))
        return f"{line} (in tests marked xfail: {known})" if known else line

    def to_json(self) -> dict[str, Any]:
        """The figures and notes, for the report file."""
        names = ("requests", "server_errors", "schema_violations", "stray_writes")
        figures = {name: getattr(self, name) for name in names}
        figures["forged_or_replayed_accepted"] = self.forged_or_replayed_accepted
        figures["in_xfail_tests"] = dict(self.known)
        answers = dict(sorted(self.answers.items()))
        return {**figures, "notes": list(self.notes), "answers": answers, "summary": self.summary()}


TALLY = Tally()
"""The session's tally (one pytest process runs the suite once)."""
REPORTED_RUNS: set[str] = set()
"""Every run id an accepted request was told about (starts, schedules, events)."""


def report_runs(status: int, body: bytes) -> None:
    """Remember the run ids a 200/202 answer reports (``run_id``, ``runs``)."""
    if status not in (200, 202):
        return
    answer = json_of(body)
    ids = [answer["run_id"]] if isinstance(answer.get("run_id"), str) else []
    runs = answer.get("runs")
    ids += [i for i in runs if isinstance(i, str)] if isinstance(runs, list) else []
    REPORTED_RUNS.update(ids)


def counted(response: httpx.Response) -> None:
    """httpx response hook: count the request, note a response >= 500, keep run ids."""
    TALLY.add(requests=1)
    if response.status_code >= 500:
        TALLY.add(server_errors=1)
        request = response.request
        TALLY.note(f"{response.status_code} for {request.method} {request.url.raw_path!r}")
    if response.status_code in (200, 202):
        report_runs(response.status_code, response.read())


# -- the stack ---------------------------------------------------------------------------


@dataclass
class FuzzStack:
    """A running ``relay dev`` (in-process deliveries) and what the tests need to talk to it."""

    server: ServerProcess
    url: str
    data_dir: Path
    key: bytes

    @property
    def db(self) -> Database:
        """The stack's SQLite database."""
        return Database(self.data_dir / "relay.db")

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the API whose every answer is counted."""
        hooks = {"response": [counted]}
        return httpx.Client(base_url=self.url, timeout=30, event_hooks=hooks, **kwargs)

    def sign(self, method: str, path: str, body: bytes, *, now: float | None = None) -> str:
        """A valid ``X-Relay-Signature`` for this request (a new nonce each time)."""
        return signature(method=method, path=path, body=body, key=self.key, now=now)


def signature(*, method: str, path: str, body: bytes, key: bytes, now: float | None) -> str:
    """A fresh ``X-Relay-Signature`` (scheme v2: method, path, time, nonce, body)."""
    return signing.sign(method=method, path=path, body=body, key=key, now=now)


def stack_environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fuzz stack (and of ``relay`` commands on its data dir)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        RELAY_SAGA_MODULES=SAGA_MODULES,
        RELAY_SAGAS=SAGA_NAMES,
        RELAY_DATA_DIR=str(data_dir),
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def start_stack(tmp_path: Path, **extra_env: str) -> FuzzStack:
    """``relay dev --in-process`` on a free loopback port, serving the fuzz sagas.

    ``extra_env`` adds settings (``RELAY_API_AUTH="api_key"``: the run API wants keys).
    """
    data_dir = tmp_path / "data"
    key = secrets.token_hex(32)
    env = stack_environment(data_dir, RELAY_SIGNING_KEY=key, **extra_env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tooling.dev_stack", "--port", str(port), "--in-process"]
    server = start_server(
        "relay-dev-fuzz",
        command,
        port=port,
        log_dir=tmp_path,
        env=env,
        ready=lambda: _answers(f"{url}/healthz"),
    )
    return FuzzStack(server=server, url=url, data_dir=data_dir, key=key.encode())


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- the database ------------------------------------------------------------------------

Snapshot = dict[str, list[tuple[Any, ...]]]


class Database:
    """Read-only views of the stack's SQLite file: snapshots and quiet points."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def snapshot(self) -> Snapshot:
        """Every row of every table, in a stable order."""
        with self._connect() as conn:
            query = (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            tables = [name for (name,) in conn.execute(query)]
            return {
                table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
                for table in sorted(tables)
            }

    def count(self, table: str, where: str = "1", *params: Any) -> int:
        """Rows of ``table`` matching ``where``."""
        with self._connect() as conn:
            (count,) = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {where}", params
            ).fetchone()
            return int(count)

    def run_ids(self) -> set[str]:
        """Every stored run id."""
        with self._connect() as conn:
            return {run_id for (run_id,) in conn.execute("SELECT run_id FROM runs")}

    def wait_quiet(self, *, timeout_seconds: float = 60.0) -> Snapshot:
        """Wait until no run is in flight and the queue is empty; the snapshot then.

        "Quiet" also asks two snapshots in a row to be equal, so a write that was about
        to land (an in-process delivery between commit and ack) is not mistaken for one
        made by the next request.
        """
        deadline = time.monotonic() + timeout_seconds
        previous: Snapshot | None = None
        while time.monotonic() < deadline:
            current = self.snapshot()
            is_idle = not current.get("queue") and all(
                _status(row) in TERMINAL for row in current.get("runs", [])
            )
            if is_idle and current == previous:
                return current
            previous = current
            time.sleep(0.05)
        raise AssertionError(f"the stack did not go quiet in {timeout_seconds:g}s")


def _status(row: tuple[Any, ...]) -> str:
    return str(row[2])  # runs: run_id, saga, status, ...


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed between two snapshots, table by table (empty: nothing)."""
    changes = []
    for table in sorted(set(before) | set(after)):
        old, new = set(before.get(table, [])), set(after.get(table, []))
        changes += [f"{table}: + {row!r}"[:300] for row in sorted(new - old, key=repr)]
        changes += [f"{table}: - {row!r}"[:300] for row in sorted(old - new, key=repr)]
    return changes


def post_once(
    client: httpx.Client, path: str, body: bytes, headers: Any
) -> Callable[[], tuple[int, bytes]]:
    """What ``check_outcome`` sends: one POST, answered as its status and body."""

    def send() -> tuple[int, bytes]:
        response = client.post(path, content=body, headers=headers)
        return response.status_code, response.content

    return send


def check_outcome(stack: FuzzStack, send: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
    """Send one request to a quiet stack; a refusal (>= 400) must have written nothing.

    An accepted request (2xx) may write the runs its answer reports, and nothing else.
    A refusal's writes count as stray writes in the summary.
    """
    before = stack.db.wait_quiet()
    status, body = send()
    after = stack.db.snapshot()
    changes = diff(before, after)
    if status < 400:
        answer = json_of(body)
        runs = answer.get("runs") if isinstance(answer.get("runs"), list) else []
        reported = [repr(r) for r in [answer.get("run_id"), *runs] if isinstance(r, str)]
        changes = [c for c in changes if not any(r in c for r in reported)]
    elif changes:
        TALLY.add(stray_writes=1)
        TALLY.note(f"{status} answer wrote: {changes[0]}")
    assert status < 500, f"{status}: {body[:300]!r}"
    assert not changes, f"a {status} answer changed the database: {changes[:5]}"
    return status, body


# -- raw HTTP ----------------------------------------------------------------------------


def raw_request(
    url: str, request: bytes, *, timeout_seconds: float = 10.0
) -> tuple[int, bytes, bytes]:
    """Send ``request`` as is (paths and headers no client would send): status, head, body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_seconds) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if _is_complete(b"".join(chunks)):
                break
    answer = b"".join(chunks)
    TALLY.add(requests=1)
    status_line, _, rest = answer.partition(b"\r\n")
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/") else 0
    if status >= 500 or status == 0:
        TALLY.add(server_errors=1)
        TALLY.note(f"{status or 'no answer'} for raw request {request[:120]!r}")
    head, _, body = rest.partition(b"\r\n\r\n")
    report_runs(status, body)
    return status, head, body


def _is_complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def json_of(body: bytes) -> Mapping[str, Any]:
    """A JSON answer's object ({} when it is not one)."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
