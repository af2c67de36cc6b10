"""The PullQueue contract, run against every registered adapter (see conftest.py).

Time: the embedded and in-memory queues read the shared ``FixedClock``, so these tests
probe exact boundaries (due at ``t``, still hidden at ``t - 0.001``). A cloud queue on an
emulator keeps its own wall-clock time and whole-second delays: with it the same tests
wait for real, with a one-second lease and two-second delays, check "hidden" shortly
before the boundary and "due" by polling for up to a second and a half after it. The
``queue_time`` fixture is that difference; backends registered with
``real_time_pull_queue_backend`` get the real-time one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

import pytest

from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.ports.clock import FixedClock
from core.ports.task_queue import Delivery, PullQueue
from tests.support.backends.registry import REAL_TIME_PULL_QUEUES


class QueueTime(Protocol):
    """How a test moves through time with the queue under test."""

    lease_seconds: float

    def now(self) -> float:
        """The current time, as the queue sees it."""
        ...

    def delay(self, seconds: float) -> float:
        """The delay to use where the test says ``seconds`` (shortened on real time)."""
        ...

    def lease_before(self, queue: PullQueue, at: float) -> list[Delivery]:
        """Lease at a moment before ``at`` (expecting what is due only at ``at`` to stay)."""
        ...

    def lease_when_due(self, queue: PullQueue, at: float) -> list[Delivery]:
        """Lease once ``at`` has come (expecting what is due by then)."""
        ...

    def lease_after(self, queue: PullQueue, at: float) -> list[Delivery]:
        """Lease once ``at`` has passed, a single poll (expecting nothing)."""
        ...


@dataclass
class FixedQueueTime:
    """The shared fixed clock: leases at exact instants, nothing waits."""

    clock: FixedClock
    lease_seconds: float = 30.0

    def now(self) -> float:
        return self.clock.now()

    def delay(self, seconds: float) -> float:
        return seconds

    def lease_before(self, queue: PullQueue, at: float) -> list[Delivery]:
        return queue.lease_due(now=at - 0.001, limit=10, lease_seconds=self.lease_seconds)

    def lease_when_due(self, queue: PullQueue, at: float) -> list[Delivery]:
        return queue.lease_due(now=at, limit=10, lease_seconds=self.lease_seconds)

    def lease_after(self, queue: PullQueue, at: float) -> list[Delivery]:
        return queue.lease_due(now=at, limit=10, lease_seconds=self.lease_seconds)


@dataclass
class RealQueueTime:
    """Wall-clock time: sleeps until the instants the test names, with a tolerance."""

    lease_seconds: float = 1.0
    delay_seconds: float = 2.0
    margin_seconds: float = 0.3
    tolerance_seconds: float = 1.5

    def now(self) -> float:
        return time.time()

    def delay(self, seconds: float) -> float:
        return self.delay_seconds

    def lease_before(self, queue: PullQueue, at: float) -> list[Delivery]:
        _sleep_until(at - self.margin_seconds)
        now = time.time()
        assert now < at, "the test was too slow to look before the boundary"
        return queue.lease_due(now=now, limit=10, lease_seconds=self.lease_seconds)

    def lease_when_due(self, queue: PullQueue, at: float) -> list[Delivery]:
        _sleep_until(at)
        deadline = at + self.tolerance_seconds
        while True:
            leased = queue.lease_due(now=time.time(), limit=10, lease_seconds=self.lease_seconds)
            if leased or time.time() > deadline:
                return leased
            time.sleep(0.1)

    def lease_after(self, queue: PullQueue, at: float) -> list[Delivery]:
        _sleep_until(at + self.margin_seconds)
        return queue.lease_due(now=time.time(), limit=10, lease_seconds=self.lease_seconds)


def _sleep_until(at: float) -> None:
    remaining = at - time.time()
    if remaining > 0:
        time.sleep(remaining)


@pytest.fixture
def queue_time(request: pytest.FixtureRequest, clock: FixedClock) -> QueueTime:
    """The time driver matching the pull queue under test."""
    backend = request.node.callspec.params.get("pull_queue")
    if backend in REAL_TIME_PULL_QUEUES:
        return RealQueueTime()
    return FixedQueueTime(clock)


def msg(step: str = "reserve", *, attempt: int = 1, not_before: float | None = None) -> Message:
    return Message(RunId("r-1"), StepName(step), Action.EXECUTE, attempt, not_before)


def lease_now(queue: PullQueue, qt: QueueTime, limit: int = 10) -> list[Delivery]:
    return queue.lease_due(now=qt.now(), limit=limit, lease_seconds=qt.lease_seconds)


def test_enqueued_message_is_leased(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """A message enqueued now is due now, delivered once with delivery_count 1."""
    message = msg(not_before=None)
    pull_queue.enqueue(messages=[message])

    deliveries = lease_now(pull_queue, queue_time)

    assert [(d.message, d.delivery_count) for d in deliveries] == [(message, 1)]
    assert deliveries[0].receipt
    assert pull_queue.pending_count() == 1


def test_a_message_comes_back_naming_its_saga(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """The saga a message names survives the queue; one that names none comes back without."""
    named = Message(RunId("r-1"), StepName("reserve"), Action.EXECUTE, 1, saga="order")
    unnamed = msg("charge")
    pull_queue.enqueue(messages=[named, unnamed])

    seen: dict[str, Message] = {}
    while len(seen) < 2:  # a cloud queue may hand them out over several polls
        more = queue_time.lease_when_due(pull_queue, queue_time.now())
        assert more, f"only {list(seen)} came back"
        seen.update((d.message.step, d.message) for d in more)

    assert seen == {"reserve": named, "charge": unnamed}
    assert (seen["reserve"].saga, seen["charge"].saga) == ("order", None)


def test_duplicate_enqueue_delivers_once(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """Enqueuing the same message id again while it is queued is a silent no-op."""
    pull_queue.enqueue(messages=[msg()])
    pull_queue.enqueue(messages=[msg(), msg()])

    deliveries = lease_now(pull_queue, queue_time)

    assert len(deliveries) == 1
    assert pull_queue.pending_count() == 1


def test_duplicate_enqueue_while_leased_is_dropped(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """A message id that is leased (not yet acked) is also dropped on enqueue."""
    pull_queue.enqueue(messages=[msg()])
    lease_now(pull_queue, queue_time)

    pull_queue.enqueue(messages=[msg()])

    assert pull_queue.pending_count() == 1
    assert lease_now(pull_queue, queue_time) == []


def test_not_before_in_future_waits_until_due(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """A delayed message is not leased before its not_before, and is leased from then on."""
    due_at = queue_time.now() + queue_time.delay(60)
    delayed = msg(not_before=due_at)
    pull_queue.enqueue(messages=[delayed])

    early = queue_time.lease_before(pull_queue, due_at)
    on_time = queue_time.lease_when_due(pull_queue, due_at)

    assert early == []
    assert [d.message for d in on_time] == [delayed]


def test_leased_message_is_redelivered_after_lease_expires(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """An unacked message stays hidden for the lease, then comes back with delivery_count 2."""
    pull_queue.enqueue(messages=[msg()])
    now = queue_time.now()
    first = lease_now(pull_queue, queue_time)

    hidden = queue_time.lease_before(pull_queue, now + queue_time.lease_seconds)
    again = queue_time.lease_when_due(pull_queue, now + queue_time.lease_seconds)

    assert len(first) == 1
    assert hidden == []
    assert [(d.message, d.delivery_count) for d in again] == [(msg(), 2)]
    assert again[0].receipt != first[0].receipt


def test_ack_deletes_the_message(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """An acked message is gone: not redelivered after its lease would have ended."""
    pull_queue.enqueue(messages=[msg("a"), msg("b")])
    now = queue_time.now()
    deliveries = lease_now(pull_queue, queue_time)

    pull_queue.ack(receipts=[d.receipt for d in deliveries])

    assert pull_queue.pending_count() == 0
    assert queue_time.lease_after(pull_queue, now + queue_time.lease_seconds) == []


def test_ack_with_stale_or_unknown_receipt_is_ignored(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """A receipt from an expired lease does not delete the message's newer delivery."""
    pull_queue.enqueue(messages=[msg()])
    now = queue_time.now()
    first = lease_now(pull_queue, queue_time)
    second = queue_time.lease_when_due(pull_queue, now + queue_time.lease_seconds)

    pull_queue.ack(receipts=[first[0].receipt, "no-such-receipt", ""])

    assert pull_queue.pending_count() == 1
    pull_queue.ack(receipts=[second[0].receipt])
    assert pull_queue.pending_count() == 0


def test_message_can_be_enqueued_again_after_ack(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """Dedup lasts while the message is queued or leased; after ack the id is free again."""
    pull_queue.enqueue(messages=[msg()])
    first = lease_now(pull_queue, queue_time)
    pull_queue.ack(receipts=[first[0].receipt])

    pull_queue.enqueue(messages=[msg()])
    again = lease_now(pull_queue, queue_time)
    pull_queue.ack(receipts=[first[0].receipt])

    assert [d.message for d in again] == [msg()]
    assert again[0].receipt != first[0].receipt
    assert pull_queue.pending_count() == 1


def test_release_redelivers_after_delay(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """A released message is due again after delay_seconds, not before, and counts deliveries."""
    pull_queue.enqueue(messages=[msg()])
    first = lease_now(pull_queue, queue_time)
    delay = queue_time.delay(5)
    released_at = queue_time.now()

    pull_queue.release(receipt=first[0].receipt, delay_seconds=delay)

    assert queue_time.lease_before(pull_queue, released_at + delay) == []
    again = queue_time.lease_when_due(pull_queue, released_at + delay)
    assert [d.delivery_count for d in again] == [2]


def test_release_with_zero_delay_is_due_at_once(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """Releasing with no delay makes the message leasable immediately, long before lease end."""
    pull_queue.enqueue(messages=[msg()])
    first = lease_now(pull_queue, queue_time)

    pull_queue.release(receipt=first[0].receipt, delay_seconds=0)

    assert len(queue_time.lease_when_due(pull_queue, queue_time.now())) == 1


def test_released_delivery_receipt_cannot_ack(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """After release, the released delivery's receipt no longer deletes the message."""
    pull_queue.enqueue(messages=[msg()])
    first = lease_now(pull_queue, queue_time)
    pull_queue.release(receipt=first[0].receipt, delay_seconds=0)

    pull_queue.ack(receipts=[first[0].receipt])

    assert pull_queue.pending_count() == 1


def test_lease_limit_is_honoured(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """lease_due hands out at most limit messages; the rest stay due for the next poll."""
    pull_queue.enqueue(messages=[msg(f"s{i}") for i in range(5)])

    first = lease_now(pull_queue, queue_time, limit=3)
    second = lease_now(pull_queue, queue_time, limit=3)

    assert len(first) == 3
    assert len(second) == 2
    assert {d.message.step for d in first + second} == {f"s{i}" for i in range(5)}


def test_lease_due_returns_oldest_visible_first(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """Due messages come out by visible time, then by enqueue order."""
    now = queue_time.now()
    pull_queue.enqueue(messages=[msg("late", not_before=now - 1), msg("first-now")])
    pull_queue.enqueue(messages=[msg("earliest", not_before=now - 5), msg("second-now")])

    deliveries = pull_queue.lease_due(
        now=queue_time.now(), limit=10, lease_seconds=queue_time.lease_seconds
    )

    assert [d.message.step for d in deliveries] == ["earliest", "late", "first-now", "second-now"]


def test_concurrent_enqueues_of_one_id_keep_one_message(
    pull_queue: PullQueue, queue_time: QueueTime
) -> None:
    """Ten threads enqueuing the same message id at once leave exactly one message."""
    threads_count = 10
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def enqueue() -> None:
        barrier.wait()
        try:
            pull_queue.enqueue(messages=[msg()])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert pull_queue.pending_count() == 1
    assert len(lease_now(pull_queue, queue_time)) == 1


def test_empty_enqueue_and_ack_are_no_ops(pull_queue: PullQueue, queue_time: QueueTime) -> None:
    """Empty batches are accepted and change nothing."""
    pull_queue.enqueue(messages=[])
    pull_queue.ack(receipts=[])

    assert pull_queue.pending_count() == 0
    assert lease_now(pull_queue, queue_time) == []
