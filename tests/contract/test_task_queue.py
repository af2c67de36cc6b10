"""The PullQueue contract, run against every registered adapter (see conftest.py)."""

from __future__ import annotations

import threading

from core.domain.records import Message, RunId, StepName
from core.domain.status import Action
from core.ports.clock import FixedClock
from core.ports.task_queue import PullQueue

LEASE = 30.0


def msg(step: str = "reserve", *, attempt: int = 1, not_before: float | None = None) -> Message:
    return Message(RunId("r-1"), StepName(step), Action.EXECUTE, attempt, not_before)


def test_enqueued_message_is_leased(pull_queue: PullQueue, clock: FixedClock) -> None:
    """A message enqueued now is due now, delivered once with delivery_count 1."""
    message = msg(not_before=None)
    pull_queue.enqueue(messages=[message])

    deliveries = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)

    assert [(d.message, d.delivery_count) for d in deliveries] == [(message, 1)]
    assert deliveries[0].receipt
    assert pull_queue.pending_count() == 1


def test_duplicate_enqueue_delivers_once(pull_queue: PullQueue, clock: FixedClock) -> None:
    """Enqueuing the same message id again while it is queued is a silent no-op."""
    pull_queue.enqueue(messages=[msg()])
    pull_queue.enqueue(messages=[msg(), msg()])

    deliveries = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)

    assert len(deliveries) == 1
    assert pull_queue.pending_count() == 1


def test_duplicate_enqueue_while_leased_is_dropped(
    pull_queue: PullQueue, clock: FixedClock
) -> None:
    """A message id that is leased (not yet acked) is also dropped on enqueue."""
    pull_queue.enqueue(messages=[msg()])
    pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)

    pull_queue.enqueue(messages=[msg()])

    assert pull_queue.pending_count() == 1
    assert pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE) == []


def test_not_before_in_future_waits_until_due(pull_queue: PullQueue, clock: FixedClock) -> None:
    """A delayed message is not leased before its not_before, and is leased from then on."""
    due_at = clock.now() + 60
    delayed = msg(not_before=due_at)
    pull_queue.enqueue(messages=[delayed])

    early = pull_queue.lease_due(now=due_at - 0.001, limit=10, lease_seconds=LEASE)
    on_time = pull_queue.lease_due(now=due_at, limit=10, lease_seconds=LEASE)

    assert early == []
    assert [d.message for d in on_time] == [delayed]


def test_leased_message_is_redelivered_after_lease_expires(
    pull_queue: PullQueue, clock: FixedClock
) -> None:
    """An unacked message stays hidden for the lease, then comes back with delivery_count 2."""
    pull_queue.enqueue(messages=[msg()])
    now = clock.now()
    first = pull_queue.lease_due(now=now, limit=10, lease_seconds=LEASE)

    hidden = pull_queue.lease_due(now=now + LEASE - 0.001, limit=10, lease_seconds=LEASE)
    again = pull_queue.lease_due(now=now + LEASE, limit=10, lease_seconds=LEASE)

    assert len(first) == 1
    assert hidden == []
    assert [(d.message, d.delivery_count) for d in again] == [(msg(), 2)]
    assert again[0].receipt != first[0].receipt


def test_ack_deletes_the_message(pull_queue: PullQueue, clock: FixedClock) -> None:
    """An acked message is gone: not redelivered after its lease would have ended."""
    pull_queue.enqueue(messages=[msg("a"), msg("b")])
    now = clock.now()
    deliveries = pull_queue.lease_due(now=now, limit=10, lease_seconds=LEASE)

    pull_queue.ack(receipts=[d.receipt for d in deliveries])

    assert pull_queue.pending_count() == 0
    assert pull_queue.lease_due(now=now + 10 * LEASE, limit=10, lease_seconds=LEASE) == []


def test_ack_with_stale_or_unknown_receipt_is_ignored(
    pull_queue: PullQueue, clock: FixedClock
) -> None:
    """A receipt from an expired lease does not delete the message's newer delivery."""
    pull_queue.enqueue(messages=[msg()])
    now = clock.now()
    first = pull_queue.lease_due(now=now, limit=10, lease_seconds=LEASE)
    second = pull_queue.lease_due(now=now + LEASE, limit=10, lease_seconds=LEASE)

    pull_queue.ack(receipts=[first[0].receipt, "no-such-receipt", ""])

    assert pull_queue.pending_count() == 1
    pull_queue.ack(receipts=[second[0].receipt])
    assert pull_queue.pending_count() == 0


def test_message_can_be_enqueued_again_after_ack(pull_queue: PullQueue, clock: FixedClock) -> None:
    """Dedup lasts while the message is queued or leased; after ack the id is free again."""
    pull_queue.enqueue(messages=[msg()])
    first = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)
    pull_queue.ack(receipts=[first[0].receipt])

    pull_queue.enqueue(messages=[msg()])
    again = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)
    pull_queue.ack(receipts=[first[0].receipt])

    assert [d.message for d in again] == [msg()]
    assert again[0].receipt != first[0].receipt
    assert pull_queue.pending_count() == 1


def test_release_redelivers_after_delay(pull_queue: PullQueue, clock: FixedClock) -> None:
    """A released message is due again after delay_seconds, not before, and counts deliveries."""
    pull_queue.enqueue(messages=[msg()])
    first = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)

    pull_queue.release(receipt=first[0].receipt, delay_seconds=5)

    assert pull_queue.lease_due(now=clock.now() + 4.999, limit=10, lease_seconds=LEASE) == []
    again = pull_queue.lease_due(now=clock.now() + 5, limit=10, lease_seconds=LEASE)
    assert [d.delivery_count for d in again] == [2]


def test_release_with_zero_delay_is_due_at_once(pull_queue: PullQueue, clock: FixedClock) -> None:
    """Releasing with no delay makes the message leasable immediately, long before lease end."""
    pull_queue.enqueue(messages=[msg()])
    first = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)

    pull_queue.release(receipt=first[0].receipt, delay_seconds=0)

    assert len(pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)) == 1


def test_released_delivery_receipt_cannot_ack(pull_queue: PullQueue, clock: FixedClock) -> None:
    """After release, the released delivery's receipt no longer deletes the message."""
    pull_queue.enqueue(messages=[msg()])
    first = pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)
    pull_queue.release(receipt=first[0].receipt, delay_seconds=0)

    pull_queue.ack(receipts=[first[0].receipt])

    assert pull_queue.pending_count() == 1


def test_lease_limit_is_honoured(pull_queue: PullQueue, clock: FixedClock) -> None:
    """lease_due hands out at most limit messages; the rest stay due for the next poll."""
    pull_queue.enqueue(messages=[msg(f"s{i}") for i in range(5)])

    first = pull_queue.lease_due(now=clock.now(), limit=3, lease_seconds=LEASE)
    second = pull_queue.lease_due(now=clock.now(), limit=3, lease_seconds=LEASE)

    assert len(first) == 3
    assert len(second) == 2
    assert {d.message.step for d in first + second} == {f"s{i}" for i in range(5)}


def test_lease_due_returns_oldest_visible_first(pull_queue: PullQueue, clock: FixedClock) -> None:
    """Due messages come out by visible time, then by enqueue order."""
    now = clock.now()
    pull_queue.enqueue(messages=[msg("late", not_before=now - 1), msg("first-now")])
    pull_queue.enqueue(messages=[msg("earliest", not_before=now - 5), msg("second-now")])

    deliveries = pull_queue.lease_due(now=now, limit=10, lease_seconds=LEASE)

    assert [d.message.step for d in deliveries] == ["earliest", "late", "first-now", "second-now"]


def test_concurrent_enqueues_of_one_id_keep_one_message(
    pull_queue: PullQueue, clock: FixedClock
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
    assert len(pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE)) == 1


def test_empty_enqueue_and_ack_are_no_ops(pull_queue: PullQueue, clock: FixedClock) -> None:
    """Empty batches are accepted and change nothing."""
    pull_queue.enqueue(messages=[])
    pull_queue.ack(receipts=[])

    assert pull_queue.pending_count() == 0
    assert pull_queue.lease_due(now=clock.now(), limit=10, lease_seconds=LEASE) == []
