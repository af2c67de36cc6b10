"""The ``relay`` CLI against a temporary RELAY_DATA_DIR: start, runs, retry/cancel, manifest."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from core.domain.status import RunStatus
from functions.demo_services import db as demo_db
from functions.http.app import ALL_ROUTES, create_app
from functions.http.auth import HmacVerifier
from functions.http.callers import OpenAuthenticator
from functions.sagas import order
from functions.settings import Settings
from functions.wiring import build_engine
from infra.local.runtime.dispatcher import Dispatcher, InProcessDelivery
from infra.local.runtime.supervisor import free_port
from infra.local.sqlite_queue import SQLiteTaskQueue
from tests.support.entry_points import TestClient
from tooling.cli import main
from tooling.local_stack import StackProcess

ROOT = Path(__file__).resolve().parents[2]
GOOD_ORDER = {
    "customer_id": "cust-1",
    "email": "ada@example.com",
    "items": [{"sku": "SKU-BOOK", "quantity": 2}],
    "payment_token": "tok_visa",
}
DECLINED_ORDER = {**GOOD_ORDER, "customer_id": "cust-2", "payment_token": "tok_chargeDeclined"}
ORDER_STEPS = [
    "validate_order",
    "reserve_inventory",
    "charge_payment",
    "create_order",
    "send_confirmation",
]


@pytest.fixture
def relay_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh RELAY_DATA_DIR for the CLI and the demo services; their connections closed after."""
    data_dir = tmp_path / "relay"
    monkeypatch.setenv("RELAY_DATA_DIR", str(data_dir))
    for name in ("RELAY_BACKEND", "RELAY_SAGAS", "RELAY_FAULTS", "RELAY_SAGA_MODULES", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    yield data_dir
    demo_db.close_all()


def relay(*args: str) -> Result:
    """Invoke the CLI in this process, as the console script would."""
    return CliRunner().invoke(main, list(args))


def start(raw_input: dict[str, Any], *extra: str) -> str:
    result = relay("start", "order", "--input", json.dumps(raw_input), *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def drive(data_dir: Path) -> None:
    """Deliver every queued message in this process until the queue is empty."""
    engine = build_engine(Settings(data_dir=data_dir))

    async def deliver_all() -> None:
        assert isinstance(engine.queue, SQLiteTaskQueue)
        dispatcher = Dispatcher(engine.queue, InProcessDelivery(engine, concurrency=4))
        await dispatcher.run_until_idle(timeout_seconds=60)
        await dispatcher.aclose()

    try:
        asyncio.run(deliver_all())
    finally:
        engine.close()


def api_view(data_dir: Path, run_id: str) -> dict[str, Any]:
    """What ``GET /v1/runs/{id}`` answers for the same store."""
    engine = build_engine(Settings(data_dir=data_dir))
    app = create_app(
        engine=lambda: engine,
        verifier=HmacVerifier(b"k"),
        authenticator=OpenAuthenticator("local"),
        include=ALL_ROUTES,
    )
    try:
        with TestClient(app) as client:
            response = client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200
        view: dict[str, Any] = response.json()
        return view
    finally:
        engine.close()


def stored_run_count(data_dir: Path) -> tuple[int, int]:
    """(runs in the store, messages in the queue)."""
    engine = build_engine(Settings(data_dir=data_dir))
    try:
        assert isinstance(engine.queue, SQLiteTaskQueue)
        return len(engine.runs.list(limit=1000)), engine.queue.pending_count()
    finally:
        engine.close()


# -- start / runs show / runs list -----------------------------------------------------


def test_runs_show_json_is_exactly_the_http_run_view(relay_data_dir: Path) -> None:
    """`runs show --json` prints the same document as GET /v1/runs/{id}."""
    run_id = start(GOOD_ORDER)
    drive(relay_data_dir)

    result = relay("runs", "show", run_id, "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == api_view(relay_data_dir, run_id)
    assert shown["status"] == "COMPLETED"
    assert [step["name"] for step in shown["steps"]] == ORDER_STEPS
    assert set(shown["steps"][0]) == {
        "name",
        "status",
        "attempts",
        "execute_attempts",
        "compensation_attempts",
        "started_at",
        "finished_at",
        "error",
        "error_detail",
    }


def test_runs_show_draws_a_timeline_with_every_step_and_the_run_error(
    relay_data_dir: Path,
) -> None:
    """The human view lists each step with its status and shows why the run compensated."""
    run_id = start(DECLINED_ORDER)
    drive(relay_data_dir)

    result = relay("runs", "show", run_id)

    assert result.exit_code == 0, result.output
    assert run_id in result.stdout and "COMPENSATED" in result.stdout
    for step in ORDER_STEPS:
        assert step in result.stdout
    assert "SKIPPED" in result.stdout
    assert "run error" in result.stdout and "PaymentDeclined" in result.stdout
    assert "declined for payment" in result.stdout  # the full text, for whoever runs the CLI
    error_lines = [line for line in result.stdout.splitlines() if "declined" in line]
    assert error_lines and not any("tok_chargeDeclined" in line for line in error_lines)
    assert "█" in result.stdout  # the bars of the timeline
    charge = next(line for line in result.stdout.splitlines() if "charge_payment" in line)
    assert "1 + 1 undo" in charge  # declined once; its own compensation ran once
    assert "(creation to last change)" in result.stdout


def test_runs_list_filters_by_status_and_prints_the_api_list_shape(relay_data_dir: Path) -> None:
    """`runs list --status X --json` returns only runs in X, as GET /v1/runs does."""
    completed = start(GOOD_ORDER)
    compensated = start(DECLINED_ORDER)
    drive(relay_data_dir)

    table = relay("runs", "list")
    only_completed = relay("runs", "list", "--status", "COMPLETED", "--json")

    assert table.exit_code == 0, table.output
    assert completed in table.stdout and compensated in table.stdout
    assert only_completed.exit_code == 0, only_completed.output
    runs = json.loads(only_completed.stdout)["runs"]
    assert [run["run_id"] for run in runs] == [completed]
    assert set(runs[0]) == {"run_id", "saga", "status", "created_at", "updated_at"}


def test_start_with_the_same_idempotency_key_names_the_same_run(relay_data_dir: Path) -> None:
    """A repeated start with one key prints the run the first start created."""
    first = start(GOOD_ORDER, "--idempotency-key", "order-42")
    second = start(GOOD_ORDER, "--idempotency-key", "order-42")

    assert first == second
    assert stored_run_count(relay_data_dir)[0] == 1


def test_start_with_invalid_input_exits_2_naming_the_fields_and_writes_nothing(
    relay_data_dir: Path,
) -> None:
    """Field errors are printed, the exit code is 2, and no run or message is stored."""
    bad = {"customer_id": "cust-1", "items": [], "payment_token": "12"}

    result = relay("start", "order", "--input", json.dumps(bad))

    assert result.exit_code == 2
    for field in ("email", "items", "payment_token"):
        assert field in result.stderr
    assert stored_run_count(relay_data_dir) == (0, 0)


def test_start_of_an_unknown_saga_exits_2_listing_the_known_sagas(relay_data_dir: Path) -> None:
    """An unknown saga name is a usage error that names the sagas the bundle serves."""
    result = relay("start", "refund", "--input", "{}")

    assert result.exit_code == 2
    assert "refund" in result.stderr
    assert "onboarding" in result.stderr and "order" in result.stderr


def test_start_with_malformed_json_exits_2(relay_data_dir: Path) -> None:
    """Input that is not JSON is refused before anything is started."""
    result = relay("start", "order", "--input", "{not json")

    assert result.exit_code == 2
    assert "not valid JSON" in result.output


# -- retry / cancel --------------------------------------------------------------------


def test_retry_of_a_completed_run_exits_1_with_the_allowed_state(relay_data_dir: Path) -> None:
    """Only FAILED runs can be retried; the message says so."""
    run_id = start(GOOD_ORDER)
    drive(relay_data_dir)

    result = relay("runs", "retry", run_id)

    assert result.exit_code == 1
    assert "cannot retry" in result.stderr and "FAILED" in result.stderr


@pytest.mark.parametrize("command", ["retry", "cancel", "show"])
def test_run_commands_on_an_unknown_run_exit_1(relay_data_dir: Path, command: str) -> None:
    """A run id that does not exist is reported, not a traceback."""
    result = relay("runs", command, "r-missing")

    assert result.exit_code == 1
    assert "r-missing" in result.stderr and "not found" in result.stderr


def test_cancel_of_a_pending_run_ends_it_cancelled(relay_data_dir: Path) -> None:
    """A cancelled run that nothing ran yet ends CANCELLED once the queue is worked."""
    run_id = start(GOOD_ORDER)

    result = relay("runs", "cancel", run_id)
    drive(relay_data_dir)

    assert result.exit_code == 0, result.output
    shown = json.loads(relay("runs", "show", run_id, "--json").stdout)
    assert shown["status"] == RunStatus.CANCELLED.value


def test_cancel_of_a_finished_run_exits_1(relay_data_dir: Path) -> None:
    """A run that already ended cannot be cancelled."""
    run_id = start(GOOD_ORDER)
    drive(relay_data_dir)

    result = relay("runs", "cancel", run_id)

    assert result.exit_code == 1
    assert "cannot cancel" in result.stderr


# -- manifest --------------------------------------------------------------------------


def test_manifest_describes_every_saga_step_queue_and_target(relay_data_dir: Path) -> None:
    """The manifest lists the bundle's sagas with every step's policy, the queue and targets."""
    result = relay("manifest")

    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["version"] == 2
    sagas = {saga["name"]: saga for saga in manifest["sagas"]}
    assert set(sagas) == {"order", "onboarding", "fulfilment", "stock_report", "etl"}
    etl_steps = sagas["etl"]["steps"]  # a pipeline runs as a saga of one step per task
    assert [step["name"] for step in etl_steps] == ["extract", "audit", "transform", "load"]
    assert not any(step["has_compensation"] for step in etl_steps)
    assert sagas["etl"]["input_schema"]["properties"].keys() == {
        "row_count",
        "seed",
        "batch_size",
        "eur_per_unit",
    }
    order_entry = sagas["order"]
    assert [step["name"] for step in order_entry["steps"]] == ORDER_STEPS
    assert order_entry["input_schema"]["properties"].keys() >= {"customer_id", "items"}
    for step in order_entry["steps"]:
        assert step["has_compensation"] is True
        assert step["timeout_seconds"] == order.saga.steps[step["name"]].timeout_seconds
        assert step["retry"]["max_attempts"] >= 1
    assert order_entry["steps"][1]["after"] == ["validate_order"]
    assert [(q["name"], q["sagas"]) for q in manifest["queues"]] == [
        ("relay-steps", ["etl", "fulfilment", "onboarding", "order", "stock_report"])
    ]
    targets = {target["name"]: target for target in manifest["functions"]}
    assert {name: t["gcp"]["entry_point"] for name, t in targets.items()} == {
        "api": "api",
        "worker": "worker",
        "relay": "relay",
        "pubsub": "pubsub",
    }
    assert "order.charge_payment" in targets["worker"]["steps"]
    assert targets["api"]["steps"] == []


def test_manifest_routes_are_the_routes_the_gcp_targets_serve(relay_data_dir: Path) -> None:
    """Each target's routes in the manifest are those of its app in functions/gcp.py."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # functions-framework imports
        from functions import gcp

    manifest = json.loads(relay("manifest").stdout)
    apps = {"api": gcp._API_APP, "worker": gcp._WORKER_APP, "relay": gcp._RELAY_APP}
    for target in manifest["functions"]:
        if target["name"] not in apps:  # pubsub: a CloudEvent target, no routes
            assert target["routes"] == []
            continue
        served = sorted(route.path for route in apps[target["name"]].routes)  # type: ignore[attr-defined]
        assert sorted(route["path"] for route in target["routes"]) == served


# -- start --url (through a real `relay dev`) ------------------------------------------


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """One `relay dev` with one HTTP worker for the --url tests, stopped by process group."""
    data_dir = tmp_path_factory.mktemp("stack")
    stack = StackProcess(data_dir=data_dir, port=free_port(), workers=1)
    with stack:
        stack.start()
        yield stack


def test_start_with_url_and_wait_prints_the_finished_run(running_stack: StackProcess) -> None:
    """`start --url --wait --json` goes through the HTTP API and prints the completed run."""
    result = relay(
        "start", "order", "--input", json.dumps(GOOD_ORDER), "--url", running_stack.url,
        "--wait", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["status"] == "COMPLETED"
    assert [step["status"] for step in view["steps"]] == ["SUCCEEDED"] * len(ORDER_STEPS)


def test_start_with_url_and_invalid_input_exits_2_naming_the_field(
    running_stack: StackProcess,
) -> None:
    """The API's 422 becomes exit code 2 with the bad field named."""
    bad = {**GOOD_ORDER, "email": "not-an-address"}

    result = relay("start", "order", "--input", json.dumps(bad), "--url", running_stack.url)

    assert result.exit_code == 2
    assert "email" in result.stderr


def test_start_with_url_of_an_unknown_saga_exits_2(running_stack: StackProcess) -> None:
    """The API's 404 for an unknown saga becomes exit code 2 listing the known sagas."""
    result = relay("start", "refund", "--input", "{}", "--url", running_stack.url)

    assert result.exit_code == 2
    assert "refund" in result.stderr and "order" in result.stderr


def test_start_with_wait_of_a_run_that_compensates_exits_3(running_stack: StackProcess) -> None:
    """`start --wait` says how the run ended: a declined order ends COMPENSATED, exit code 3."""
    result = relay(
        "start", "order", "--input", json.dumps(DECLINED_ORDER), "--url", running_stack.url,
        "--wait", "--json",
    )  # fmt: skip

    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["status"] == "COMPENSATED"
    assert "ended COMPENSATED" in result.stderr


def test_manifest_with_a_saga_that_does_not_import_prints_one_line(
    relay_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken saga module: exit 2 and one error line naming it, not a traceback."""
    (tmp_path / "trip.py").write_text("import no_such_library_here\n")
    monkeypatch.setenv("RELAY_SAGA_MODULES", f"trip={tmp_path / 'trip.py'}:saga")

    result = relay("manifest")

    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "saga 'trip' cannot be loaded" in lines[0] and "no_such_library_here" in lines[0]
