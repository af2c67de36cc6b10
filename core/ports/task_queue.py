"""The task queue port: durable, at-least-once delivery of step messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.domain.records import Message


class TaskQueue(Protocol):
    """Where the engine puts the messages that drive runs forward.

    Contract (``tests/contract/test_task_queue.py``):

    * Delivery is at least once; order is not guaranteed.
    * ``enqueue`` is idempotent on ``Message.message_id``: enqueuing a message whose id
      is already queued (or, where the backend remembers it, recently delivered) is a
      no-op, not an error.
    * A message with ``not_before`` is not delivered before that time.
    * Unreachable or throttling backends raise ``core.errors.QueueUnavailable``.
    """

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        """Durably enqueue ``messages``; returns once they cannot be lost."""
        ...

    def describe(self) -> Mapping[str, str]:
        """Where this queue points (path, queue name, endpoint) for logs and errors."""
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed out by a pull queue, with how often it was handed out before."""

    message: Message
    delivery_count: int
    receipt: str


class PullQueue(TaskQueue, Protocol):
    """A queue the bundle polls itself (local dispatcher, tests); push queues lack this.

    A leased message is invisible to other pollers until its lease ends; ``ack``
    deletes it, ``release`` makes it visible again after ``delay_seconds``.
    """

    def lease_due(self, *, now: float, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` due messages (oldest first) and hide them for a while."""
        ...

    def ack(self, *, receipts: Sequence[str]) -> None:
        """Delete delivered messages; unknown receipts are ignored."""
        ...

    def release(self, *, receipt: str, delay_seconds: float) -> None:
        """Give a leased message back to be delivered again after ``delay_seconds``."""
        ...

    def pending_count(self) -> int:
        """Messages queued or leased (for progress and tests)."""
        ...
