"""Cold start of the GCP worker against DESIGN.md's floor, on the Firestore and Tasks emulators.

Both are started the same way, ``functions-framework --asgi`` on a fresh port, and polled
with the same client from the instant the process is spawned until the first 200:

- floor (``bench/floor_firestore.py``): a bare function that imports
  ``google.cloud.firestore``, creates a client on its first request and writes one
  document to the emulator;
- worker (``functions/gcp.py``, target ``worker``, ``RELAY_BACKEND=gcp``): answers the first
  step delivery of a run prepared in Firestore beforehand, as Cloud Tasks would POST it
  (RS256 ID token for the configured audience and service account, verified against
  certificates served from 127.0.0.1 through ``RELAY_OIDC_CERTS_URL``). To answer 200 it
  verifies the token, loads the run, claims, runs and commits step ``s0`` of the no-op
  saga and enqueues ``s1`` on the Cloud Tasks emulator: "first step done".

Interleaved repetitions, medians and their ratio (DESIGN.md's target: at most 1.5).
Then ``python -X importtime`` of ``import functions.gcp`` (in a subprocess, from the
project root, with the worker's environment): the top cumulative imports and whether the
Google clients, gRPC and Cloud Monitoring load at module import (they should not).

Run: ``python -m bench.gcp_cold_start [--repeats 7] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench._gcp_emulators import (
    LOCATION,
    PROJECT,
    ROOT,
    firestore_emulator,
    tasks_emulator,
)
from bench.cold_start import ff_command, time_to_first_answer
from core.domain.records import Message, RunId, StepName
from core.domain.status import Action, StepStatus
from infra.local.runtime.supervisor import free_port
from tests.support.oidc_proxy import CertsServer, TokenAuthority

SERVICE_ACCOUNT = "relay-tasks@relay-bench.iam.gserviceaccount.com"
QUEUE_PATH = f"projects/{PROJECT}/locations/{LOCATION}/queues/relay-cold-start"
COLLECTION = "relay_runs_cold_start"
WATCHED_MODULES = (
    "google.cloud.firestore",
    "google.cloud.tasks_v2",
    "grpc",
    "google.cloud.monitoring",
    "google.cloud.monitoring_v3",
    "google.auth",
    "google.api_core",
    "google.protobuf",
)


# -- the stack -------------------------------------------------------------------------


class Stack:
    """The emulators, the certificates and the environment the worker runs with."""

    def __init__(self, *, firestore_host: str, tasks_host: str, certs_url: str) -> None:
        self.firestore_host = firestore_host
        self.tasks_host = tasks_host
        self.authority: TokenAuthority | None = None
        # Tasks for the next step are POSTed here by the emulator: nothing listens.
        self.worker_url = f"http://127.0.0.1:{free_port()}/v1/steps"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "RELAY_BACKEND": "gcp",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": firestore_host,
            "CLOUD_TASKS_EMULATOR_HOST": tasks_host,
            "RELAY_FIRESTORE_COLLECTION": COLLECTION,
            "RELAY_TASKS_QUEUE": QUEUE_PATH,
            "RELAY_WORKER_URL": self.worker_url,
            "RELAY_TASKS_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
            "RELAY_OIDC_CERTS_URL": certs_url,
            "RELAY_SAGA_MODULES": "noop=bench.noop_saga:saga",
            "RELAY_SAGAS": "noop",
        }
        for name in ("RELAY_FAULTS", "RELAY_TASKS_AUDIENCE", "RELAY_METRICS", "RELAY_GCS_BUCKET"):
            self.env.pop(name, None)
        self._store: Any = None

    def open(self) -> None:
        """Create the Cloud Tasks queue and a store client for preparing and checking runs."""
        import grpc  # type: ignore[import-untyped]
        from google.cloud import firestore, tasks_v2
        from google.cloud.tasks_v2.services.cloud_tasks.transports import (
            CloudTasksGrpcTransport,
        )

        from infra.gcp.firestore import FirestoreStateStore

        channel = grpc.insecure_channel(self.tasks_host)
        tasks = tasks_v2.CloudTasksClient(
            transport=CloudTasksGrpcTransport(host=self.tasks_host, channel=channel)
        )
        tasks.create_queue(
            parent=QUEUE_PATH.rsplit("/queues/", 1)[0], queue=tasks_v2.Queue(name=QUEUE_PATH)
        )
        tasks.transport.close()  # type: ignore[no-untyped-call]
        os.environ["FIRESTORE_EMULATOR_HOST"] = self.firestore_host
        client = firestore.Client(project=PROJECT)
        self._store = FirestoreStateStore(client, collection=COLLECTION)

    def prepare_run(self) -> RunId:
        """A fresh run of the no-op saga in Firestore, its first step PENDING."""
        from bench.noop_saga import saga
        from core.engine.engine import Engine
        from core.registry import SagaRegistry
        from infra.memory.task_queue import MemoryTaskQueue

        # The first message goes to a throw-away queue: the bench delivers it itself.
        engine = Engine(
            registry=SagaRegistry({"noop": saga}), store=self._store, queue=MemoryTaskQueue()
        )
        return engine.runs.start("noop", {}).run.run_id

    def first_step_status(self, run_id: RunId) -> StepStatus | None:
        snapshot = self._store.load_run(run_id=run_id)
        return None if snapshot is None else snapshot.step(StepName("s0")).status


# -- measuring -------------------------------------------------------------------------


def measure_floor(stack: Stack) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": stack.firestore_host,
    }
    port = free_port()
    return time_to_first_answer(
        ff_command(ROOT / "bench" / "floor_firestore.py", "floor", port),
        env,
        port,
        "/",
        b"hello",
        {"content-type": "text/plain"},
    )


def measure_worker(stack: Stack) -> float:
    assert stack.authority is not None
    run_id = stack.prepare_run()
    message = Message(run_id, StepName("s0"), Action.EXECUTE, 1)
    body = json.dumps(message.to_json(), sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer "
        + stack.authority.mint(audience=stack.worker_url, email=SERVICE_ACCOUNT),
        "User-Agent": "Google-Cloud-Tasks",
        "X-CloudTasks-QueueName": QUEUE_PATH.rsplit("/", 1)[-1],
        "X-CloudTasks-TaskName": f"bench-{uuid.uuid4().hex}",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
    }
    port = free_port()
    elapsed = time_to_first_answer(
        ff_command(ROOT / "functions" / "gcp.py", "worker", port),
        stack.env,
        port,
        "/v1/steps",
        body,
        headers,
    )
    status = stack.first_step_status(run_id)
    if status is not StepStatus.SUCCEEDED:
        raise SystemExit(f"the worker answered 200 but step s0 of {run_id} is {status}")
    return elapsed


# -- import time -----------------------------------------------------------------------


def import_profile(env: Mapping[str, str]) -> dict[str, Any]:
    """``-X importtime`` of ``import functions.gcp`` and which watched modules it loads."""
    probe = (
        "import json, sys, time\n"
        "started = time.perf_counter()\n"
        "import functions.gcp\n"
        "elapsed = time.perf_counter() - started\n"
        f"watched = {list(WATCHED_MODULES)!r}\n"
        "print(json.dumps({'seconds': elapsed, "
        "'loaded': {m: m in sys.modules for m in watched}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    entries: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        entries.append((int(cumulative_us), int(self_us), name.rstrip()))
    project = [e for e in entries if e[2].strip().split(".")[0] in ("functions", "core", "infra")]
    result["top"] = [
        {"module": name, "cumulative_ms": cum / 1000, "self_ms": own / 1000}
        for cum, own, name in sorted(entries, reverse=True)[:10]
    ]
    result["total_import_ms"] = sum(own for _, own, _ in entries) / 1000
    result["project_self_ms"] = sum(own for _, own, _ in project) / 1000
    return result


FIRST_DELIVERY_IMPORTS = (
    "google.cloud.firestore",
    "google.cloud.tasks_v2",
    "google.auth.crypt",
    "google.auth.jwt",
)


def first_delivery_imports(env: Mapping[str, str]) -> dict[str, float]:
    """Milliseconds to import what the first delivery loads, in order, after functions.gcp."""
    probe = (
        "import importlib, json, time\n"
        "import functions.gcp\n"
        "spent = {}\n"
        f"for name in {list(FIRST_DELIVERY_IMPORTS)!r}:\n"
        "    started = time.perf_counter()\n"
        "    importlib.import_module(name)\n"
        "    spent[name] = (time.perf_counter() - started) * 1000\n"
        "print(json.dumps(spent))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"import probe failed:\n{done.stderr[-2000:]}")
    spent: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return spent


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    floor: list[float] = []
    worker: list[float] = []
    authority = TokenAuthority()
    certs = CertsServer(authority)
    with (
        tempfile.TemporaryDirectory(prefix="relay-gcp-cold-") as tmp,
        firestore_emulator(Path(tmp)) as firestore_host,
        tasks_emulator(Path(tmp)) as tasks_host,
        contextlib.closing(certs),
    ):
        stack = Stack(firestore_host=firestore_host, tasks_host=tasks_host, certs_url=certs.url)
        stack.authority = authority
        stack.open()
        # One untimed round first: the emulators' own first requests are slow (a fresh
        # Firestore emulator takes ~1.6 s for its first write), which is not a cold start.
        warm_up = (measure_floor(stack), measure_worker(stack))
        for _ in range(args.repeats):  # interleaved: drift hits both alike
            floor.append(measure_floor(stack))
            worker.append(measure_worker(stack))
        imports = import_profile(stack.env)
        imports["first_delivery"] = first_delivery_imports(stack.env)
    result = {
        "repeats": args.repeats,
        "floor_median_seconds": statistics.median(floor),
        "worker_median_seconds": statistics.median(worker),
        "ratio": statistics.median(worker) / statistics.median(floor),
        "floor_seconds": floor,
        "worker_seconds": worker,
        "warm_up_seconds": {"floor": warm_up[0], "worker": warm_up[1]},
        "import_functions_gcp": imports,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_report(result)


def print_report(result: Mapping[str, Any]) -> None:
    """The figures, in plain text."""
    floor_ms = result["floor_median_seconds"] * 1000
    worker_ms = result["worker_median_seconds"] * 1000
    print(
        "GCP cold start, process spawn -> first 200 (functions-framework --asgi; Firestore and "
        f"Cloud Tasks emulators), {result['repeats']} interleaved repetitions"
    )
    print(
        f"  floor (bare function: import google.cloud.firestore, lazy client, one write): "
        f"median {floor_ms:.0f} ms  [{_ms_list(result['floor_seconds'])}]"
    )
    print(
        "  relay worker (RELAY_BACKEND=gcp: OIDC verify, load, claim, run, commit s0, "
        f"enqueue s1): median {worker_ms:.0f} ms  [{_ms_list(result['worker_seconds'])}]"
    )
    print(f"  ratio {result['ratio']:.2f} (target <= 1.5)")
    warm = result["warm_up_seconds"]
    print(
        f"  (untimed warm-up round before these: floor {warm['floor'] * 1000:.0f} ms, "
        f"worker {warm['worker'] * 1000:.0f} ms)"
    )
    imports = result["import_functions_gcp"]
    print()
    print(
        f"python -X importtime -c 'import functions.gcp' (worker environment): "
        f"{imports['seconds'] * 1000:.0f} ms wall, {imports['total_import_ms']:.0f} ms summed "
        f"self time, of which functions/core/infra {imports['project_self_ms']:.0f} ms"
    )
    print(f"  {'cumulative':>11} {'self':>8}  module (top 10 by cumulative time)")
    for entry in imports["top"]:
        print(f"  {entry['cumulative_ms']:>8.1f} ms {entry['self_ms']:>5.1f} ms  {entry['module']}")
    print("  loaded by module import (they should not be):")
    for module, is_loaded in imports["loaded"].items():
        print(f"    {module:<28} {'yes' if is_loaded else 'no'}")
    print("  then imported by the first delivery (in this order, each on top of the previous):")
    for module, spent_ms in imports["first_delivery"].items():
        print(f"    {module:<28} {spent_ms:>6.0f} ms")


def _ms_list(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


if __name__ == "__main__":
    main()
