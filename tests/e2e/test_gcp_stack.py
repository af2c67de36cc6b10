"""The GCP stack end to end on the emulators, over real HTTP (``tests/support/gcp_stack.py``).

Firestore, Pub/Sub and Cloud Tasks emulators; ``functions-framework --asgi --target relay``
as a subprocess with ``RELAY_BACKEND=gcp``; a token-minting proxy in front of it for
every delivery (the emulators send no OIDC tokens; Google's infrastructure does).

What ``gcloud-tasks-emulator`` 0.6.2 really does (read in .venv-tasks-emulator,
``gcloud_tasks_emulator/server.py``), and how these tests rely on it:

* A non-2xx answer, or a connection error (the function down), puts the task at the back
  of its queue and it is POSTed again on the next pass, about 0.1 s later, without
  backoff and forever (``--max-retries`` defaults to -1). So a step the worker defers
  (503: lease held, infrastructure busy) or a crash (the proxy answers 502 while the
  function restarts) is redelivered, as Cloud Tasks would, only much sooner.
* ``schedule_time`` is honoured: a task due later is skipped and re-queued until due
  (retry backoff of the order saga's steps arrives as delayed tasks).
* One task at a time per queue, and ``dispatch_deadline`` is ignored (``urlopen``
  without a timeout): a hung worker would stall the queue, so the proxy forwards with a
  120 s timeout. Task names are not de-duplicated (no ALREADY_EXISTS): re-enqueued
  message ids are delivered again, which the worker's re-drive rule makes harmless.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from core.domain.run_ids import RunKey, run_id_for_client_key
from functions.demo_services.payments import DECLINED_TOKEN
from functions.sagas.order import GOOD_TOKEN, demo_inputs
from tests.support.gcp import FirestoreEmulator, PubSubEmulator, TasksEmulator
from tests.support.gcp_stack import (
    AUDIENCE,
    SERVICE_ACCOUNT,
    FunctionServer,
    GcpStack,
    TokenAuthority,
    encode_data,
    gcp_stack,
    http_call,
)
from tooling.checks import check_runs

TERMINAL = frozenset({"COMPLETED", "COMPENSATED", "FAILED", "CANCELLED"})


@pytest.fixture(scope="module")
def stack(
    firestore_emulator: FirestoreEmulator,
    tasks_emulator: TasksEmulator,
    pubsub_emulator: PubSubEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GcpStack]:
    """One stack for this module: the order and greet sagas on a fresh queue/collection."""
    with gcp_stack(
        firestore=firestore_emulator,
        tasks=tasks_emulator,
        pubsub=pubsub_emulator,
        tmp_path=tmp_path_factory.mktemp("gcp-stack"),
        sagas="order,greet,parcel",
    ) as built:
        yield built


def test_order_completes_and_a_declined_order_compensates(stack: GcpStack) -> None:
    """Cloud Tasks chains the steps: a good order COMPLETES, a declined one COMPENSATES."""
    good = dict(demo_inputs(1, seed=7)[0], payment_token=GOOD_TOKEN)
    declined = dict(good, payment_token=DECLINED_TOKEN, customer_id="cust-declined")
    run_ids = [
        stack.start_run("order", good, key="order-good"),
        stack.start_run("order", declined, key="order-declined"),
    ]

    statuses = stack.wait_for(run_ids, TERMINAL, timeout_seconds=90)

    assert [statuses[run_id] for run_id in run_ids] == ["COMPLETED", "COMPENSATED"]
    engine = stack.engine()
    try:
        report = check_runs(engine, run_ids, data_dir=stack.data_dir)
    finally:
        engine.close()
    assert report.is_clean, report.to_json()
    assert report.ledger_checked == ["order"]
    assert all(result["violated"] == 0 for result in report.invariant_results.values())
    assert stack.proxy.counters.statuses.get(200, 0) >= 8  # every step came through it


def test_pubsub_message_starts_one_run(stack: GcpStack) -> None:
    """A message published to the Pub/Sub emulator is pushed (with a token) and starts a run."""
    message_id = stack.publish({"name": "Ada"}, relay_topic="people.eu.joined")
    run_id = RunKey.event(message_id).run_id("greet")

    deadline = time.monotonic() + 60
    while http_call("GET", f"{stack.function.url}/v1/runs/{run_id}")[0] != 200:
        assert time.monotonic() < deadline, stack.function.logs()[-3000:]
        time.sleep(0.3)
    statuses = stack.wait_for([run_id], TERMINAL, timeout_seconds=60)

    assert statuses[run_id] == "COMPLETED"
    assert stack.get_run(run_id)["input"] == {"name": "Ada", "times": 1}
    # The same message id pushed again (a redelivery) finds the same run.
    envelope = {
        "message": {
            "data": encode_data({"name": "Ada"}),
            "attributes": {"relay_topic": "people.eu.joined"},
            "messageId": message_id,
        },
        "subscription": stack.push_subscription,
    }
    status, body = http_call("POST", f"{stack.proxy.url}/v1/events", envelope)
    assert (status, body["runs"]) == (202, [run_id])


def test_pubsub_message_without_topic_attribute_uses_the_subscription_mapping(
    stack: GcpStack,
) -> None:
    """RELAY_PUBSUB_TOPICS maps the push subscription (from the envelope) to a Relay topic."""
    message_id = stack.publish({"name": "Mapped"})
    run_id = RunKey.event(message_id).run_id("greet")

    deadline = time.monotonic() + 60
    while http_call("GET", f"{stack.function.url}/v1/runs/{run_id}")[0] != 200:
        assert time.monotonic() < deadline, stack.function.logs()[-3000:]
        time.sleep(0.3)

    assert stack.wait_for([run_id], TERMINAL, timeout_seconds=60)[run_id] == "COMPLETED"


OVER_A_DOCUMENT = "x" * 1_200_000
"""A name that makes a run's input larger than a Firestore document (1 MiB)."""


def test_pubsub_cloud_event_target_serves_eventarc_deliveries(
    stack: GcpStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``--target pubsub``: a CloudEvent starts one run; bad data, or a refused run, is acked."""
    server = FunctionServer(
        target="pubsub", env=stack.env, log_dir=tmp_path_factory.mktemp("pubsub-target")
    )
    server.start()
    try:
        envelope = {
            "message": {"data": encode_data({"name": "Eva"}), "messageId": "ce-e2e-1"},
            "subscription": "projects/relay-test/subscriptions/eventarc-sub",
        }
        headers = {
            "ce-id": "ce-e2e-1",
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": "//pubsub.googleapis.com/projects/relay-test/topics/people.ce.joined",
        }
        first = http_call("POST", f"{server.url}/", envelope, headers=headers)
        again = http_call("POST", f"{server.url}/", envelope, headers=headers)
        bad = dict(envelope, message={"data": "@@", "messageId": "ce-e2e-2"})
        acked = http_call("POST", f"{server.url}/", bad, headers={**headers, "ce-id": "ce-e2e-2"})
        large = {"data": encode_data({"name": OVER_A_DOCUMENT}), "messageId": "ce-e2e-3"}
        refused = http_call(
            "POST",
            f"{server.url}/",
            dict(envelope, message=large),
            headers={**headers, "ce-id": "ce-e2e-3"},
        )
    finally:
        server.stop()

    assert (first[0], again[0], acked[0], refused[0]) == (200, 200, 200, 200)
    run_id = RunKey.event("ce-e2e-1").run_id("greet")
    assert stack.wait_for([run_id], TERMINAL, timeout_seconds=60)[run_id] == "COMPLETED"
    assert (
        http_call(
            "GET", f"{stack.function.url}/v1/runs/{RunKey.event('ce-e2e-2').run_id('greet')}"
        )[0]
        == 404
    )
    assert "dead-lettered" in server.logs()
    assert "Firestore rejected" in server.logs()  # the refused run, acked: no retry loop
    refused_run = RunKey.event("ce-e2e-3").run_id("greet")
    assert http_call("GET", f"{stack.function.url}/v1/runs/{refused_run}")[0] == 404


def test_a_start_firestore_rejects_answers_422_and_writes_nothing(stack: GcpStack) -> None:
    """A run too large for a Firestore document is refused for good (422), not deferred (503)."""
    key = "greet-too-large"
    # Just under the app's 1 MiB body limit; with the run's other fields, over a document.
    name = "x" * (1024 * 1024 - 100)
    status, body = http_call(
        "POST",
        f"{stack.function.url}/v1/sagas/greet/runs",
        {"name": name},
        headers={"Idempotency-Key": key},
    )

    assert status == 422, body
    assert (body["error"], body["service"]) == ("request_rejected", "Firestore")
    assert "1 MiB" in body["message"]
    run_id = run_id_for_client_key("greet", key)
    assert http_call("GET", f"{stack.function.url}/v1/runs/{run_id}")[0] == 404


def test_pubsub_message_resumes_a_run_waiting_for_its_event(stack: GcpStack) -> None:
    """A run sleeps (a delayed Cloud Task), waits, and a published payment resumes it."""
    run_id = stack.start_run("parcel", {"parcel": "p-gcp"}, key="p-gcp")  # correlation id

    deadline = time.monotonic() + 60
    steps: dict[str, str] = {}
    while steps.get("paid") != "RUNNING" or steps.get("cool_off") != "SUCCEEDED":
        assert time.monotonic() < deadline, (steps, stack.function.logs()[-3000:])
        time.sleep(0.3)
        steps = {step["name"]: step["status"] for step in stack.get_run(run_id)["steps"]}
    assert stack.get_run(run_id)["status"] == "WAITING"
    stack.publish({"parcel": "p-gcp", "amount": 12}, relay_topic="payments.card.confirmed")

    assert stack.wait_for([run_id], TERMINAL, timeout_seconds=60)[run_id] == "COMPLETED"
    done = stack.get_run(run_id)
    assert done["output"]["ship"] == {"shipped": "p-gcp", "paid": 12}
    nap = next(step for step in done["steps"] if step["name"] == "cool_off")
    slept = datetime.fromisoformat(nap["finished_at"]) - datetime.fromisoformat(nap["started_at"])
    assert slept.total_seconds() >= 1.5  # schedule_time held the task back


def test_malformed_pubsub_message_is_acknowledged_not_redelivered(stack: GcpStack) -> None:
    """A message whose data is not JSON is acknowledged and logged once, not pushed again."""
    publisher = stack.pubsub.publisher()
    try:
        future = publisher.publish(
            stack.topic_path, b"not json {password: hunter2}", relay_topic="people.eu.joined"
        )
        message_id = future.result(timeout=30)
    finally:
        publisher.stop()

    def dead_letters() -> list[str]:
        return [
            line
            for line in stack.function.logs().splitlines()
            if "dead-lettered" in line and f'"message_id":"{message_id}"' in line
        ]

    deadline = time.monotonic() + 30
    while not dead_letters():
        assert time.monotonic() < deadline, "the dead-letter record was never logged"
        time.sleep(0.3)
    time.sleep(3)  # a nack would be redelivered within this (the emulator retries at once)

    assert len(dead_letters()) == 1, dead_letters()
    assert '"severity":"ERROR"' in dead_letters()[0]
    assert "hunter2" not in stack.function.logs()


def test_scheduled_invocation_twice_with_the_same_time_starts_one_run(stack: GcpStack) -> None:
    """Cloud Scheduler's retry (same X-CloudScheduler-ScheduleTime) finds the first run."""
    url = f"{stack.proxy.url}/v1/schedules/nightly-greeting"
    header = {"X-CloudScheduler-ScheduleTime": "2026-11-27T03:00:00Z"}

    first = http_call("POST", url, {}, headers=header)
    retry = http_call("POST", url, {}, headers=header)

    assert first[0] == retry[0] == 202, (first, retry)
    assert (first[1]["created"], retry[1]["created"]) == (True, False)
    run_id = first[1]["run_id"]
    assert retry[1]["run_id"] == run_id
    assert stack.wait_for([run_id], TERMINAL, timeout_seconds=60)[run_id] == "COMPLETED"
    assert stack.get_run(run_id)["input"] == {"name": "night shift", "times": 1}


def test_delivery_without_a_valid_token_is_refused_and_changes_nothing(stack: GcpStack) -> None:
    """Straight to the function: no token 401; forged, wrong audience or identity 403."""
    run_id = stack.start_run("greet", {"name": "Eve"}, key="token-check")
    stack.wait_for([run_id], TERMINAL, timeout_seconds=60)
    before = stack.get_run(run_id)
    message = {"run_id": run_id, "step": "deliver", "action": "compensate", "attempt": 9}
    stranger = TokenAuthority()
    tokens = {
        "forged": stranger.mint(),
        "audience": stack.authority.mint(audience="https://someone-else.test"),
        "identity": stack.authority.mint(email="intruder@evil.iam.gserviceaccount.com"),
        "issuer": stack.authority.mint(issuer="https://evil.example"),
        "expired": stack.authority.mint(lifetime_seconds=-3600),
    }
    function = stack.function.url

    unauthenticated = [
        http_call("POST", f"{function}/v1/steps", message)[0],
        http_call("POST", f"{function}/v1/events", {"topic": "people.x.joined", "id": "e"})[0],
        http_call("POST", f"{function}/v1/schedules/nightly-greeting", {})[0],
        http_call("POST", f"{function}/v1/sweep", {})[0],
    ]
    forbidden = {
        name: http_call(
            "POST", f"{function}/v1/steps", message, headers={"Authorization": f"Bearer {token}"}
        )[0]
        for name, token in tokens.items()
    }

    assert unauthenticated == [401, 401, 401, 401]
    assert forbidden == dict.fromkeys(tokens, 403)
    assert stack.get_run(run_id) == before
    assert http_call("GET", f"{function}/v1/runs/{RunKey.event('e').run_id('greet')}")[0] == 404
    # The same message with a token for this worker is accepted (the refusals were the token).
    good = stack.authority.mint(audience=AUDIENCE, email=SERVICE_ACCOUNT)
    accepted = http_call(
        "POST", f"{function}/v1/steps", message, headers={"Authorization": f"Bearer {good}"}
    )
    assert accepted[0] == 200, accepted


def test_sweep_through_the_scheduler_path_answers(stack: GcpStack) -> None:
    """The sweep job (Cloud Scheduler with OIDC, here the proxy) reaches the worker."""
    status, body = http_call("POST", f"{stack.proxy.url}/v1/sweep", {"stale_after_seconds": 600})

    assert (status, body["redriven"]) == (200, 0)


def test_stack_logs_have_no_unexpected_errors(stack: GcpStack) -> None:
    """Nothing in the function's log but the deliberate dead letter (last in the module)."""
    errors = [
        line
        for line in stack.function.logs().splitlines()
        if ("ERROR" in line or "Traceback" in line) and "dead-lettered" not in line
    ]
    assert errors == []
