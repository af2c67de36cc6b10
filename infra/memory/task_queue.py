"""An in-process ``PullQueue`` for fast engine unit tests, with SQS-like leases."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from core.domain.records import Message
from core.ports.task_queue import Delivery


@dataclass(slots=True)
class _Entry:
    """A queued or leased message; ``seq`` is its enqueue order, the tie-breaker."""

    message: Message
    seq: int
    visible_at: float
    delivery_count: int = 0
    receipt: str | None = None


class MemoryTaskQueue:
    """A ``PullQueue`` in process memory, with the SQLite queue's semantics.

    A message id is dropped on enqueue while a message with that id is queued or leased;
    after ``ack`` the id can be enqueued again. A lease hides a message until it runs out
    or is released; each lease increments ``delivery_count`` and issues a new receipt,
    so a late ack from an earlier delivery deletes nothing.

    Args:
        clock: Epoch seconds; the enqueue time of messages without ``not_before`` and
            the base of ``release`` delays.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._seq = itertools.count()

    def describe(self) -> Mapping[str, str]:
        """Names the backend; there is no location to report."""
        return {"backend": "memory"}

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        """Enqueue ``messages``; ids already queued or leased are dropped."""
        now = self._clock()
        with self._lock:
            for message in messages:
                if message.message_id in self._entries:
                    continue
                visible_at = now if message.not_before is None else message.not_before
                self._entries[message.message_id] = _Entry(message, next(self._seq), visible_at)

    def lease_due(self, *, now: float, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` messages due at ``now``, oldest first, hidden for a lease."""
        if limit <= 0:
            return []
        with self._lock:
            due = sorted(
                (e for e in self._entries.values() if e.visible_at <= now),
                key=lambda e: (e.visible_at, e.seq),
            )[:limit]
            deliveries = []
            for entry in due:
                entry.delivery_count += 1
                entry.visible_at = now + lease_seconds
                entry.receipt = (
                    f"{entry.message.message_id}:{entry.delivery_count}:{secrets.token_hex(6)}"
                )
                deliveries.append(Delivery(entry.message, entry.delivery_count, entry.receipt))
        return deliveries

    def ack(self, *, receipts: Sequence[str]) -> None:
        """Delete the delivered messages; stale or unknown receipts are ignored."""
        with self._lock:
            for receipt in receipts:
                entry = self._find(receipt)
                if entry is not None:
                    del self._entries[entry.message.message_id]

    def release(self, *, receipt: str, delay_seconds: float) -> None:
        """Make a leased message due again ``delay_seconds`` from now; stale receipts no-op."""
        visible_at = self._clock() + delay_seconds
        with self._lock:
            entry = self._find(receipt)
            if entry is not None:
                entry.visible_at = visible_at
                entry.receipt = None

    def pending_count(self) -> int:
        """Messages queued or leased."""
        with self._lock:
            return len(self._entries)

    def _find(self, receipt: str) -> _Entry | None:
        """The entry ``receipt`` was issued for, if it is still that entry's receipt."""
        message_id = receipt.rsplit(":", 2)[0]
        entry = self._entries.get(message_id)
        if entry is None or entry.receipt != receipt:
            return None
        return entry
