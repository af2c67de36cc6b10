"""Sleep and wait-for-event on the embedded backend, through HTTP, the dispatcher and SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx

from core.signing import SIGNATURE_HEADER, sign
from tooling.dev_stack import DevStack

SAGA_MODULES = "parcel=tests.e2e.waits_fixture:saga"


async def _status_becomes(
    client: httpx.AsyncClient, run_id: str, wanted: str, *, timeout_seconds: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        view = (await client.get(f"/v1/runs/{run_id}")).json()
        if view["status"] == wanted or time.monotonic() > deadline:
            return dict(view)
        await asyncio.sleep(0.05)


def test_a_run_sleeps_waits_for_its_payment_event_and_completes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_SAGA_MODULES=SAGA_MODULES, RELAY_DATA_DIR=str(tmp_path / "data"))

    async def scenario() -> tuple[dict[str, object], ...]:
        stack = DevStack(data_dir=tmp_path / "data", port=0, in_process=True, environ=env)
        await stack.start()
        try:
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
                started = await client.post(
                    "/v1/sagas/parcel/runs",
                    json={"parcel": "p-1"},
                    headers={"Idempotency-Key": "p-1"},
                )
                run_id = started.json()["run_id"]
                began = time.monotonic()
                waiting = await _status_becomes(client, run_id, "WAITING", timeout_seconds=10)
                # The sleep ends on its own; then the run waits for the event.
                await asyncio.sleep(2.0)
                for_event = (await client.get(f"/v1/runs/{run_id}")).json()
                slept = time.monotonic() - began
                body = json.dumps(
                    {
                        "topic": "payments.card.confirmed",
                        "data": {"parcel": "p-1", "amount": 12},
                        "id": "pay-1",
                    }
                ).encode()
                key = stack.settings.signing_key_bytes()
                unsigned = await client.post("/v1/events", content=body)
                delivered = await client.post(
                    "/v1/events",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(
                            method="POST", path="/v1/events", body=body, key=key
                        ),
                    },
                )
                done = await _status_becomes(client, run_id, "COMPLETED", timeout_seconds=10)
                return (
                    waiting,
                    for_event,
                    {"slept": slept, "unsigned": unsigned.status_code},
                    {"delivered": delivered.status_code, **delivered.json()},
                    done,
                )
        finally:
            await stack.stop()

    waiting, for_event, first, second, done = asyncio.run(scenario())
    assert waiting["status"] == "WAITING"
    steps = {step["name"]: step["status"] for step in for_event["steps"]}  # type: ignore[attr-defined]
    assert steps == {
        "pack": "SUCCEEDED",
        "cool_off": "SUCCEEDED",
        "paid": "RUNNING",
        "ship": "PENDING",
    }
    assert for_event["status"] == "WAITING"
    assert first["unsigned"] in (401, 403)
    assert second["delivered"] == 202
    assert (second["runs"], second["resumed"]) == ([], [done["run_id"]])
    assert done["status"] == "COMPLETED", done
    assert done["output"]["ship"] == {"shipped": "p-1", "paid": 12}  # type: ignore[index]
    nap = next(step for step in done["steps"] if step["name"] == "cool_off")  # type: ignore[attr-defined]
    assert _seconds_between(nap["started_at"], nap["finished_at"]) >= 1.5


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
