"""The TaskQueue contract for push queues, run against every ``@push_queue_backend``.

A push queue delivers by POSTing each message to the worker, so the suite checks it
from the receiving end (``tests/support/backends/push.py``): delivered with the exact body,
duplicates collapse, ``not_before`` holds, a failing worker gets the delivery again, and
outages and misconfiguration raise the engine's errors. Times are real: tolerances are
generous on the late side (``delivery_latency_seconds``) and tight on the early side.
"""

from __future__ import annotations

import json
import time

import pytest

from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.errors import ConfigurationError, QueueUnavailable
from tests.support.backends.push import PushQueueUnderTest
from tests.support.backends.registry import PUSH_QUEUE_BACKENDS

QUIET_SECONDS = 0.8
"""How long a test keeps listening to be sure nothing more arrives."""


@pytest.fixture(params=PUSH_QUEUE_BACKENDS, ids=lambda name: name.rsplit("_", 1)[0])
def push_queue(request: pytest.FixtureRequest) -> PushQueueUnderTest:
    """Each registered push queue, wired to a recording worker."""
    result: PushQueueUnderTest = request.getfixturevalue(request.param)
    return result


def _message(step: str = "charge_card", *, attempt: int = 1, not_before: float | None = None):
    return Message(
        RunId(f"r-{time.monotonic_ns()}"),
        StepName(step),
        Action.EXECUTE,
        attempt,
        not_before=not_before,
    )


def test_enqueued_message_is_delivered_once_with_its_json_body(
    push_queue: PushQueueUnderTest,
) -> None:
    """An enqueued message is POSTed once to the worker, as Message.to_json() in JSON."""
    message = _message()
    push_queue.queue.enqueue(messages=[message])

    got = push_queue.receiver.wait_for(1, timeout_seconds=push_queue.delivery_latency_seconds)
    time.sleep(QUIET_SECONDS)
    got = push_queue.receiver.received()

    assert len(got) == 1
    assert json.loads(got[0].body) == message.to_json()
    assert Message.from_json(json.loads(got[0].body)) == message
    assert (got[0].header("Content-Type") or "").startswith("application/json")
    assert got[0].path == "/relay/worker"


def test_each_message_of_a_batch_is_delivered(push_queue: PushQueueUnderTest) -> None:
    """Every distinct message of one enqueue call arrives; duplicates within it collapse."""
    messages = [_message(f"step_{i}") for i in range(5)]
    push_queue.queue.enqueue(messages=[*messages, messages[0], messages[3]])

    push_queue.receiver.wait_for(5, timeout_seconds=push_queue.delivery_latency_seconds)
    time.sleep(QUIET_SECONDS)
    bodies = sorted(json.dumps(json.loads(d.body)) for d in push_queue.receiver.received())

    assert bodies == sorted(json.dumps(m.to_json(), sort_keys=True) for m in messages)


def test_duplicate_enqueue_is_delivered_once(push_queue: PushQueueUnderTest) -> None:
    """Enqueuing the same message id twice is no error and yields one task identity.

    Where the service refuses a second task of the same name (Cloud Tasks), the worker
    gets one delivery. An emulator that does not (gcloud-tasks-emulator) delivers the
    repeat too: then both deliveries must carry the same task name and body, which is
    what lets the real service refuse it.
    """
    message = _message()
    push_queue.queue.enqueue(messages=[message])
    push_queue.queue.enqueue(messages=[message])  # no error: ALREADY_EXISTS is success

    expected = 1 if push_queue.refuses_duplicate_names else 2
    push_queue.receiver.wait_for(expected, timeout_seconds=push_queue.delivery_latency_seconds)
    time.sleep(QUIET_SECONDS)
    got = push_queue.receiver.received()

    assert len(got) == expected
    assert {d.header(push_queue.task_name_header) for d in got} == {
        got[0].header(push_queue.task_name_header)
    }
    assert got[0].header(push_queue.task_name_header)
    assert {d.body for d in got} == {got[0].body}


def test_not_before_holds_delivery_until_then(push_queue: PushQueueUnderTest) -> None:
    """A message due in 2 s is not delivered before then, and is delivered soon after."""
    due = time.time() + 2.0
    message = _message(not_before=due)
    push_queue.queue.enqueue(messages=[message])

    early = push_queue.receiver.wait_for(1, timeout_seconds=max(0.0, due - time.time() - 0.3))
    assert early == []
    got = push_queue.receiver.wait_for(
        1, timeout_seconds=due - time.time() + push_queue.delivery_latency_seconds
    )

    assert len(got) == 1
    assert got[0].at >= due - 0.05  # the service's clock and ours: a small allowance
    assert json.loads(got[0].body) == message.to_json()


def test_failing_worker_gets_the_delivery_again(push_queue: PushQueueUnderTest) -> None:
    """A non-2xx answer (503) makes the queue deliver again until the worker answers 2xx."""
    push_queue.receiver.fail_next(2, status=503)
    message = _message()
    push_queue.queue.enqueue(messages=[message])

    push_queue.receiver.wait_for(3, timeout_seconds=3 * push_queue.delivery_latency_seconds)
    time.sleep(QUIET_SECONDS)
    got = push_queue.receiver.received()

    assert len(got) == 3  # two refused, one accepted, then no more
    assert {d.body for d in got} == {got[0].body}
    assert [d.header(push_queue.retry_count_header) for d in got] == ["0", "1", "2"]


def test_missing_queue_is_a_configuration_error(push_queue: PushQueueUnderTest) -> None:
    """Enqueuing on a queue that does not exist raises ConfigurationError (not retryable)."""
    with pytest.raises(ConfigurationError) as raised:
        push_queue.missing_queue.enqueue(messages=[_message()])
    assert raised.value.__cause__ is not None
    assert not raised.value.retryable


def test_unreachable_service_is_queue_unavailable(push_queue: PushQueueUnderTest) -> None:
    """An unreachable queue service raises QueueUnavailable (retryable) within its timeout."""
    started = time.monotonic()
    with pytest.raises(QueueUnavailable) as raised:
        push_queue.unreachable_queue.enqueue(messages=[_message()])
    assert time.monotonic() - started < 10
    assert raised.value.retryable
    assert raised.value.__cause__ is not None


def test_empty_enqueue_sends_nothing(push_queue: PushQueueUnderTest) -> None:
    """Enqueuing no messages is a no-op, even on an unreachable service."""
    push_queue.unreachable_queue.enqueue(messages=[])
    push_queue.queue.enqueue(messages=[])
    time.sleep(0.3)
    assert push_queue.receiver.received() == []
