"""The AWS task queue: step messages on an SQS queue (standard or FIFO), polled or pushed.

Lambda's event source mapping consumes the queue in production; ``lease_due``/``ack``/
``release`` make the same queue a ``PullQueue`` for pollers (tests, a local poller).

Standard and FIFO queues differ in what SQS does for us::

                     standard                         FIFO (name ends in .fifo)
    duplicate send   delivered twice                  dropped for 5 min (dedup id =
                                                      sha256 of the message id)
    not_before       DelaySeconds (max 900 s)         no per-message delay: a message
                                                      received early is hidden again
    ordering         none                             per message group; one group per
                                                      message, i.e. none

With a scheduler (``long_delays``), a message due more than 900 s ahead is not sent to
SQS at all: an EventBridge Scheduler one-time schedule sends it when it is due
(``infra/aws/scheduler_delay.py``). Without one, a standard queue hops (re-sends the
message each time it is received early) and FIFO hides it for up to 12 h.

Neither queue is what makes a duplicate harmless: a redelivered or re-sent message finds
its step already claimed or finished, and the worker re-drives instead of re-running it
(DESIGN.md, "The step protocol"). FIFO de-duplication only saves that work, and only for
five minutes after the first send.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from core.domain.records import Message
from core.errors import ConfigurationError, QueueUnavailable
from core.ports.task_queue import Delivery
from infra.aws import _sqs_wire as wire
from infra.aws._boto import (
    describe_client,
    engine_error,
    error_code,
    new_client,
    rejected,
    translated,
    where,
)
from infra.aws.sqs_provisioning import CreatedQueue, create_queue

__all__ = ["CreatedQueue", "LongDelays", "SqsTaskQueue", "create_queue"]

if TYPE_CHECKING:
    import contextlib

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import MessageTypeDef, SendMessageBatchRequestEntryTypeDef

log = logging.getLogger("relay.aws.sqs")


class LongDelays(Protocol):
    """Sends a message body to the queue later than SQS's 900 s (EventBridge Scheduler)."""

    def schedule_send(
        self,
        *,
        message_id: str,
        body: str,
        due_at: float,
        queue_arn: str,
        message_group_id: str | None = None,
        dead_letter_arn: str | None = None,
    ) -> bool:
        """Arrange for ``body`` to reach ``queue_arn`` at ``due_at``; idempotent per id."""
        ...


class SqsTaskQueue:
    """A ``PullQueue`` on one SQS queue; FIFO when the URL ends in ``.fifo``.

    Delays: a standard queue sends with ``DelaySeconds`` (capped at 900 s). A message
    received while its ``not_before`` is still ahead (a delay over 900 s, or any delay on
    FIFO, which has no per-message delay) is not handed out: a standard queue sends it
    again with the remaining delay and deletes the received copy (so its receive count,
    which the dead-letter queue counts, starts again); a FIFO queue hides it until it is
    due (at most 12 h ahead; such a receive counts towards ``delivery_count`` and the
    dead-letter limit). With ``long_delays`` (EventBridge Scheduler), a message due
    more than 900 s ahead is handed to the scheduler at enqueue instead, on both queue
    types, and a standard queue's early message more than 900 s early too.

    Receipts: SQS deletes a message given *any* receipt handle it issued for it, even one
    from an expired lease or a delivery that was released. This queue remembers the
    latest receipt it handed out per message, so within one process (a poller and its
    workers) a stale or released receipt acks nothing, as the contract asks. A stale
    receipt from another process can still delete a redelivered message; the step's
    lease in the state store and the sweeper make that harmless.

    Args:
        client: A boto3 SQS client (thread-safe; shared by all threads).
        queue_url: The queue, created by Terraform or ``create_queue``.
        clock: Epoch seconds, the base of ``DelaySeconds`` at enqueue.
        tracked_receipts: How many leased messages' latest receipts to remember.
        long_delays: Sends messages due more than 900 s ahead later (None: hop).
        queue_arn: The queue's ARN, the scheduler's target (None: asked of SQS once,
            on the first long delay, with its dead-letter queue's).
    """

    def __init__(
        self,
        client: SQSClient,
        *,
        queue_url: str,
        clock: Callable[[], float] = time.time,
        tracked_receipts: int = 10_000,
        long_delays: LongDelays | None = None,
        queue_arn: str | None = None,
    ) -> None:
        self._client = client
        self._long_delays = long_delays
        self._queue_arn = queue_arn
        self._dead_letter_arn: str | None = None
        self._url = queue_url
        self._clock = clock
        self._is_fifo = queue_url.endswith(".fifo")
        self._tracked_limit = tracked_receipts
        self._lock = threading.Lock()
        # SQS message id -> the receipt handle of its latest delivery from this queue
        # object, or "" once that delivery was released.
        self._latest: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_settings(
        cls,
        *,
        queue_url: str,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        long_delays: LongDelays | None = None,
    ) -> SqsTaskQueue:
        """A queue with its own client; ``AWS_ENDPOINT_URL`` and the usual AWS variables apply."""
        client = new_client("sqs", region_name=region_name, endpoint_url=endpoint_url)
        return cls(client, queue_url=queue_url, long_delays=long_delays)

    @property
    def is_fifo(self) -> bool:
        """True for a FIFO queue (its name ends in ``.fifo``)."""
        return self._is_fifo

    def describe(self) -> Mapping[str, str]:
        """Region, endpoint and queue URL, for logs and errors."""
        return {**describe_client(self._client, "sqs"), "queue": self._url}

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        """Send ``messages`` in batches of ten; on FIFO a recent duplicate id is dropped.

        With ``long_delays``, a message due more than 900 s ahead becomes a one-time
        schedule instead (one per message id: a duplicate enqueue creates none).

        Raises:
            ConfigurationError: a FIFO message is delayed more than 12 h without a
                scheduler (see class doc), or the scheduler refused the request.
            QueueUnavailable: SQS or the scheduler throttled or failed; some messages
                may have been sent (enqueue again: FIFO and the scheduler drop the
                repeats, and workers tolerate them).
        """
        unique: dict[str, Message] = {}
        for message in messages:
            unique.setdefault(message.message_id, message)
        if not unique:
            return
        now = self._clock()
        later = [m for m in unique.values() if self._is_for_scheduler(wire.ahead(m, now))]
        if later:
            self._schedule(later)
        entries = [
            self._entry(str(i), message, now)
            for i, message in enumerate(unique.values())
            if not self._is_for_scheduler(wire.ahead(message, now))
        ]
        for batch in wire.chunks(entries, wire.BATCH):
            self._send(batch)

    def lease_due(self, *, now: float, limit: int, lease_seconds: float) -> list[Delivery]:
        """Receive up to ``limit`` due messages, hidden for ``lease_seconds`` (whole seconds).

        Up to ten per ReceiveMessage call, short polling. SQS does not order messages;
        each call's messages are sorted by due time.

        Raises:
            QueueUnavailable: SQS throttled or failed.
        """
        visibility = min(wire.whole_seconds(lease_seconds), wire.MAX_VISIBILITY_SECONDS)
        due: list[tuple[float, int, Message, MessageTypeDef]] = []
        for _ in range(limit // wire.BATCH + 3):  # bounded: early messages do not count
            wanted = limit - len(due)
            if wanted <= 0:
                break
            with self._translated():
                received = self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=min(wire.BATCH, wanted),
                    VisibilityTimeout=visibility,
                    WaitTimeSeconds=0,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                ).get("Messages", [])
            if not received:
                break
            early: list[tuple[Message, MessageTypeDef]] = []
            for raw in received:
                message = self._parse(raw)
                if message is None:
                    continue
                sent_ms = int(raw.get("Attributes", {}).get("SentTimestamp", "0"))
                if message.not_before is not None and message.not_before > now:
                    early.append((message, raw))
                    continue
                due_at = sent_ms / 1000 if message.not_before is None else message.not_before
                due.append((due_at, sent_ms, message, raw))
            if early:
                self._delay_early(early, now)
        due.sort(key=lambda entry: (entry[0], entry[1]))
        return [self._deliver(message, raw) for _, _, message, raw in due]

    def ack(self, *, receipts: Sequence[str]) -> None:
        """Delete delivered messages (DeleteMessageBatch); stale or unknown receipts no-op.

        Raises:
            QueueUnavailable: SQS throttled or failed; nothing or only part was deleted.
        """
        handles: dict[str, str] = {}
        with self._lock:
            for receipt in receipts:
                key = wire.parse_receipt(receipt)
                if key is None:
                    continue
                message_id, handle = key
                latest = self._latest.get(message_id)
                if latest is None or latest == handle:
                    handles[message_id] = handle
        entries = list(handles.items())
        for batch in wire.chunks(entries, wire.BATCH):
            with self._translated():
                response = self._client.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h} for i, (_, h) in enumerate(batch)],
                )
            self._raise_failures(response.get("Failed", []), "delete", is_receipt_call=True)
            with self._lock:
                for message_id, _ in batch:
                    self._latest.pop(message_id, None)

    def release(self, *, receipt: str, delay_seconds: float) -> None:
        """Make a leased message visible again after ``delay_seconds`` (whole seconds).

        The released receipt no longer acks the message (within this process).

        Raises:
            QueueUnavailable: SQS throttled or failed; the lease runs out by itself.
        """
        key = wire.parse_receipt(receipt)
        if key is None:
            return
        message_id, handle = key
        with self._lock:
            latest = self._latest.get(message_id)
            if latest is not None and latest != handle:
                return
        visibility = min(wire.whole_seconds(delay_seconds), wire.MAX_VISIBILITY_SECONDS)
        try:
            self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=handle, VisibilityTimeout=visibility
            )
        except Exception as exc:
            if error_code(exc) in wire.STALE_RECEIPT_CODES:
                return
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc
        with self._lock:
            self._remember(message_id, "")

    def pending_count(self) -> int:
        """Queued, in-flight and delayed messages (SQS's approximate counts)."""
        names: list[QueueAttributeNameType] = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        with self._translated():
            attributes = self._client.get_queue_attributes(
                QueueUrl=self._url, AttributeNames=names
            )["Attributes"]
        return sum(int(attributes.get(name) or "0") for name in names)

    # -- internals ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return where(self.describe(), "queue")

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return translated(service="SQS", where=self._where, unavailable=QueueUnavailable)

    def _error(self, exc: Exception) -> Exception | None:
        return engine_error(exc, service="SQS", where=self._where, unavailable=QueueUnavailable)

    def _is_for_scheduler(self, ahead_seconds: float) -> bool:
        return self._long_delays is not None and ahead_seconds > wire.MAX_DELAY_SECONDS

    def _schedule(self, messages: Sequence[Message]) -> None:
        """Hand messages due more than 900 s ahead to ``long_delays`` (one schedule each)."""
        assert self._long_delays is not None
        queue_arn = self._target_arn()
        for message in messages:
            assert message.not_before is not None
            self._long_delays.schedule_send(
                message_id=message.message_id,
                body=wire.body(message),
                due_at=message.not_before,
                queue_arn=queue_arn,
                message_group_id=wire.digest(message) if self._is_fifo else None,
                dead_letter_arn=self._dead_letter_arn,
            )

    def _target_arn(self) -> str:
        """The queue's ARN (GetQueueAttributes on first use, then remembered).

        The same call reads the redrive policy: a message the scheduler cannot deliver
        goes to the queue's dead-letter queue rather than being dropped.
        """
        if self._queue_arn is None:
            with self._translated():
                attributes = self._client.get_queue_attributes(
                    QueueUrl=self._url, AttributeNames=["QueueArn", "RedrivePolicy"]
                )["Attributes"]
            self._queue_arn = attributes["QueueArn"]
            self._dead_letter_arn = wire.dead_letter_arn(attributes.get("RedrivePolicy"))
        return self._queue_arn

    def _entry(
        self, entry_id: str, message: Message, now: float
    ) -> SendMessageBatchRequestEntryTypeDef:
        entry: SendMessageBatchRequestEntryTypeDef = {
            "Id": entry_id,
            "MessageBody": wire.body(message),
        }
        ahead = 0.0 if message.not_before is None else message.not_before - now
        if self._is_fifo:
            if ahead > wire.MAX_VISIBILITY_SECONDS:
                raise ConfigurationError(
                    f"message {message.message_id} is delayed {ahead:.0f}s; a FIFO queue can "
                    f"hold a message back at most {wire.MAX_VISIBILITY_SECONDS}s ({self._where}). "
                    "Use a standard queue or a scheduler for long sleeps"
                )
            digest = wire.digest(message)
            entry["MessageDeduplicationId"] = digest
            # One group per message: FIFO holds back a whole group while any of its
            # messages is in flight, so grouping by run would serialise a run's parallel
            # steps and let one backed-off message stall its run's cancel and events.
            entry["MessageGroupId"] = digest
        elif ahead > 0:
            entry["DelaySeconds"] = min(wire.whole_seconds(ahead), wire.MAX_DELAY_SECONDS)
        return entry

    def _send(self, entries: list[SendMessageBatchRequestEntryTypeDef]) -> None:
        with self._translated():
            response = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
        self._raise_failures(response.get("Failed", []), "send")

    def _raise_failures(
        self, failed: Sequence[Mapping[str, Any]], what: str, *, is_receipt_call: bool = False
    ) -> None:
        """Raise for batch entries SQS failed; on receipt calls, stale receipts are fine."""
        ignored = wire.STALE_RECEIPT_CODES if is_receipt_call else frozenset()
        real = [f for f in failed if f.get("Code") not in ignored]
        if not real:
            return
        detail = "; ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in real[:3])
        if any(f.get("SenderFault") for f in real):
            operation = f"{what} of {len(real)} message(s)"
            raise rejected("SQS", operation=operation, where=self._where, reason=detail)
        raise QueueUnavailable(f"SQS failed to {what} {len(real)} message(s): {detail}")

    def _parse(self, raw: MessageTypeDef) -> Message | None:
        try:
            return Message.from_json(json.loads(raw.get("Body", "")))
        except ValueError as exc:
            # Not ours or corrupt: leave it to the redrive policy (dead-letter queue).
            log.error("undecodable message %s on %s: %s", raw.get("MessageId"), self._url, exc)
            return None

    def _delay_early(self, early: list[tuple[Message, MessageTypeDef]], now: float) -> None:
        """Hold back messages received before their ``not_before`` (see class docstring)."""
        if self._is_fifo:
            entries: list[Any] = [
                {
                    "Id": str(i),
                    "ReceiptHandle": raw["ReceiptHandle"],
                    "VisibilityTimeout": min(
                        max(1, wire.whole_seconds(wire.ahead(m, now))), wire.MAX_VISIBILITY_SECONDS
                    ),
                }
                for i, (m, raw) in enumerate(early)
            ]
            with self._translated():
                response = self._client.change_message_visibility_batch(
                    QueueUrl=self._url, Entries=entries
                )
            self._raise_failures(response.get("Failed", []), "delay", is_receipt_call=True)
            return
        # With a scheduler, a message still more than 900 s early (a sender without
        # one, or a clock behind ours) waits there instead of hopping.
        scheduled = [(m, raw) for m, raw in early if self._is_for_scheduler(wire.ahead(m, now))]
        if scheduled:
            self._schedule([m for m, _ in scheduled])
        copies: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(i),
                "MessageBody": raw["Body"],
                "DelaySeconds": min(
                    max(1, wire.whole_seconds(wire.ahead(m, now))), wire.MAX_DELAY_SECONDS
                ),
            }
            for i, (m, raw) in enumerate(early)
            if not self._is_for_scheduler(wire.ahead(m, now))
        ]
        # Send before deleting: a crash in between leaves a duplicate, never a loss.
        if copies:
            self._send(copies)
        with self._translated():
            response = self._client.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": raw["ReceiptHandle"]}
                    for i, (_, raw) in enumerate(early)
                ],
            )
        self._raise_failures(response.get("Failed", []), "delete", is_receipt_call=True)

    def _deliver(self, message: Message, raw: MessageTypeDef) -> Delivery:
        message_id, handle = raw["MessageId"], raw["ReceiptHandle"]
        with self._lock:
            self._remember(message_id, handle)
        count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        receipt = f"{message_id}{wire.RECEIPT_SEPARATOR}{handle}"
        return Delivery(message=message, delivery_count=count, receipt=receipt)

    def _remember(self, message_id: str, handle: str) -> None:
        """Record the latest receipt of a message; call with ``self._lock`` held."""
        self._latest[message_id] = handle
        self._latest.move_to_end(message_id)
        while len(self._latest) > self._tracked_limit:
            self._latest.popitem(last=False)
