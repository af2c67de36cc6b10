"""Requests a backend refuses as invalid: one engine error, ``RequestRejected``, everywhere.

Each cloud service refuses some writes for good: a DynamoDB item over 400 KB, a Firestore
document over 1 MiB, an SQS message (or batch) over 1 MiB. The vendors spell it
differently (DynamoDB ``ValidationException`` or ``TransactionCanceledException`` with
``ValidationError``, Firestore ``INVALID_ARGUMENT``, SQS ``BatchRequestTooLong``); the
adapters raise ``core.errors.RequestRejected`` for all of them, so the engine and the entry
points treat a refusal alike on every cloud: not retryable, never "unavailable". These
tests provoke real refusals on the emulators (moto server, the Firestore emulator).

Which backend refuses what is part of the contract, declared below per registered
adapter: SQLite and the memory backend have no record or message size limit and store
what the clouds refuse. A new adapter fails here until it is declared.
"""

from __future__ import annotations

import pytest

from core.domain.records import Message, RunId, RunRecord, StateChange, StepName, StepRecord
from core.domain.status import Action, RunStatus
from core.errors import RequestRejected
from core.ports.clock import FixedClock
from core.ports.state_store import StateStore
from core.ports.task_queue import PullQueue

T0 = 1_700_000_000.0

RECORD_LIMITS: dict[str, int | None] = {
    "memory_store": None,
    "sqlite_store": None,
    "dynamodb_store": 400 * 1024,  # an item, attribute names included
    "firestore_store": 1024 * 1024,  # a document
}
"""Per state store: the largest record it stores, in bytes; None when it has no limit."""

REJECTING_SERVICES = {"dynamodb_store": "DynamoDB", "firestore_store": "Firestore"}
"""The service a refusal's message names."""

MESSAGE_LIMITS: dict[str, int | None] = {
    "memory_queue": None,
    "sqlite_queue": None,
    "sqs_queue": 1024 * 1024,  # a message, and a whole SendMessageBatch request
}
"""Per pull queue: the largest message body it takes, in bytes; None when it has no limit."""

TOO_LARGE = 1_200_000
"""Bytes of payload over every limit above."""


def _backend(request: pytest.FixtureRequest, fixture: str, limits: dict[str, object]) -> str:
    name: str = request.node.callspec.params[fixture]
    assert name in limits, f"declare what {name} refuses in this module ({fixture})"
    return name


def _run(run_id: str, payload: str = "") -> RunRecord:
    return RunRecord(
        run_id=RunId(run_id),
        saga="order",
        status=RunStatus.PENDING,
        input={"order_id": run_id, "note": payload},
        definition_hash="sha256:abc",
        created_at=T0,
        updated_at=T0,
    )


def _steps(run_id: str) -> list[StepRecord]:
    return [StepRecord(run_id=RunId(run_id), name=StepName("charge"), updated_at=T0)]


def _succeeded(step: StepRecord, output: object) -> StepRecord:
    """The commit of the claimed ``step``'s attempt with ``output``."""
    return step.succeeded(now=T0 + 2, output=output)


def _assert_names_the_service(error: RequestRejected, backend: str) -> None:
    service = REJECTING_SERVICES[backend]
    assert error.service == service
    text = str(error)
    assert text.startswith(f"{service} rejected "), text
    assert "RELAY_INLINE_OUTPUT_LIMIT" in text, text  # what to check


def test_a_run_too_large_for_the_store_is_rejected_and_not_written(
    state_store: StateStore, request: pytest.FixtureRequest
) -> None:
    """A run whose input is over the store's record limit raises RequestRejected, writes nothing."""
    backend = _backend(request, "store_and_queue", RECORD_LIMITS)
    run = _run("r-large", "x" * TOO_LARGE)

    if RECORD_LIMITS[backend] is None:
        stored, created = state_store.create_run(run=run, steps=_steps("r-large"), outbox=())
        assert (stored, created) == (run, True)
        snapshot = state_store.load_run(run_id=run.run_id)
        assert snapshot is not None
        assert snapshot.run.input == run.input
        return
    with pytest.raises(RequestRejected) as caught:
        state_store.create_run(run=run, steps=_steps("r-large"), outbox=())
    _assert_names_the_service(caught.value, backend)
    assert not caught.value.retryable
    assert state_store.load_run(run_id=run.run_id) is None


def test_a_step_output_too_large_for_the_store_is_rejected_and_not_written(
    state_store: StateStore, request: pytest.FixtureRequest
) -> None:
    """A commit with an output over the record limit raises RequestRejected, changes nothing."""
    backend = _backend(request, "store_and_queue", RECORD_LIMITS)
    run = _run("r-1")
    (step,) = _steps("r-1")
    state_store.create_run(run=run, steps=[step], outbox=())
    claimed = step.claimed(now=T0 + 1, lease_until=T0 + 31, error=None)
    state_store.apply(change=StateChange(run.run_id, steps=(claimed,)))
    before = state_store.load_run(run_id=run.run_id)
    assert before is not None
    done = _succeeded(before.step("charge"), {"receipt": "y" * TOO_LARGE})
    change = StateChange(run.run_id, steps=(done,))

    if RECORD_LIMITS[backend] is None:
        state_store.apply(change=change)
        after = state_store.load_run(run_id=run.run_id)
        assert after is not None
        assert after.step("charge") == done
        return
    with pytest.raises(RequestRejected) as caught:
        state_store.apply(change=change)
    _assert_names_the_service(caught.value, backend)
    assert state_store.load_run(run_id=run.run_id) == before
    small = _succeeded(before.step("charge"), {"receipt": "ok"})
    state_store.apply(change=StateChange(run.run_id, steps=(small,)))  # the store still works
    after = state_store.load_run(run_id=run.run_id)
    assert after is not None
    assert after.step("charge") == small


def test_a_record_within_the_limit_is_stored(
    state_store: StateStore, request: pytest.FixtureRequest
) -> None:
    """Three quarters of a store's limit is stored: refusals are about the limit, nothing else."""
    backend = _backend(request, "store_and_queue", RECORD_LIMITS)
    limit = RECORD_LIMITS[backend] or 4 * 1024 * 1024
    run = _run("r-fits", "z" * (limit * 3 // 4))

    stored, created = state_store.create_run(run=run, steps=_steps("r-fits"), outbox=())

    assert (stored, created) == (run, True)
    snapshot = state_store.load_run(run_id=run.run_id)
    assert snapshot is not None
    assert snapshot.run.input == run.input


def test_a_message_too_large_for_the_queue_is_rejected(
    pull_queue: PullQueue, clock: FixedClock, request: pytest.FixtureRequest
) -> None:
    """A message over the queue's size limit raises RequestRejected and is not queued."""
    backend = _backend(request, "pull_queue", MESSAGE_LIMITS)
    message = Message(RunId("r-1"), StepName("s" * TOO_LARGE), Action.EXECUTE, 1)

    if MESSAGE_LIMITS[backend] is None:
        pull_queue.enqueue(messages=[message])
        leased = pull_queue.lease_due(now=clock.now(), limit=1, lease_seconds=30.0)
        assert [delivery.message for delivery in leased] == [message]
        return
    with pytest.raises(RequestRejected) as caught:
        pull_queue.enqueue(messages=[message])
    assert caught.value.service == "SQS"
    assert str(caught.value).startswith("SQS rejected "), caught.value
    assert pull_queue.pending_count() == 0
