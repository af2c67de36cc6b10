"""Long step delays on AWS: an EventBridge Scheduler one-time schedule sends the message later.

SQS holds a message back at most 900 s (``DelaySeconds``). A message due later than that
becomes a one-time schedule whose target is the step queue itself: at the due time
Scheduler sends the exact body the queue would have sent, then deletes the schedule::

    enqueue(not_before = now + 2 h)
      |-- CreateSchedule  name  = relay-<sha256(message id)[:58]>
      |                   at(2026-11-27T13:00:00) UTC, FlexibleTimeWindow OFF
      |                   Target = queue ARN, RoleArn, Input = message body,
      |                            DeadLetterConfig = the queue's dead-letter queue
      |                   ActionAfterCompletion DELETE
      ...  2 h: no SQS message, no receive, no hop  ...
      '-- Scheduler: SendMessage(queue, body)  -> an ordinary, due step message

The schedule name is a function of the message id, so enqueuing the same message twice
(a re-drive, a retried commit) meets ``ConflictException``, which counts as success: one
schedule, one delivery. A schedule that fires is deleted, so the same id could schedule
again afterwards; by then the message is due, and due messages go to SQS directly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from core.errors import QueueUnavailable
from infra.aws._boto import (
    client_config,
    describe_client,
    error_code,
    new_client,
    translated,
    where,
)

log = logging.getLogger("relay.aws.scheduler")

NAME_PREFIX: Final = "relay-"
MAX_NAME_LENGTH: Final = 64
"""Scheduler's limit on a schedule name (characters ``[0-9a-zA-Z-_.]``)."""
_CONFLICT: Final = "ConflictException"


class SchedulerClient(Protocol):
    """The part of boto3's ``scheduler`` client this module calls.

    A protocol rather than ``mypy_boto3_scheduler``: the dev extra carries no stubs for
    the scheduler, and two methods do not justify one more dependency.
    """

    @property
    def meta(self) -> Any:
        """The client metadata (region, endpoint)."""

    def create_schedule(self, **kwargs: Any) -> Mapping[str, Any]:
        """CreateSchedule."""
        ...


def schedule_name(message_id: str) -> str:
    """The schedule of ``message_id``: ``relay-`` and 58 hex digits of its sha256.

    Message ids hold characters Scheduler refuses (``/``, ``:``) and may be longer than
    its 64-character limit; a hash fits both rules and is the same on every enqueue.
    """
    digest = hashlib.sha256(message_id.encode()).hexdigest()
    return (NAME_PREFIX + digest)[:MAX_NAME_LENGTH]


def at_expression(due_at: float) -> str:
    """``at(YYYY-MM-DDThh:mm:ss)`` in UTC, rounded up to the second (never early)."""
    moment = datetime.fromtimestamp(math.ceil(due_at - 0.001), tz=UTC)
    return f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


class EventBridgeSchedulerDelay:
    """Sends a message to an SQS queue at a later time through a one-time schedule.

    The boto3 client is built on the first schedule, not before: a function that never
    sleeps long never imports or configures the scheduler client.

    Args:
        client_factory: Builds the ``scheduler`` client (called at most once).
        role_arn: The role Scheduler assumes to call ``sqs:SendMessage`` on the queue.
        group_name: The schedule group (None: Scheduler's ``default`` group).
    """

    def __init__(
        self,
        client_factory: Callable[[], SchedulerClient],
        *,
        role_arn: str,
        group_name: str | None = None,
    ) -> None:
        self._factory = client_factory
        self._role_arn = role_arn
        self._group = group_name
        self._client: SchedulerClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        *,
        role_arn: str,
        group_name: str | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> EventBridgeSchedulerDelay:
        """A delay whose client is built with the usual AWS variables, on first use."""

        def build() -> SchedulerClient:
            client: SchedulerClient = new_client(
                "scheduler",
                region_name=region_name,
                endpoint_url=endpoint_url,
                config=client_config(max_pool_connections=10),
            )
            return client

        return cls(build, role_arn=role_arn, group_name=group_name)

    @property
    def has_client(self) -> bool:
        """True once the scheduler client was built (the first long delay)."""
        return self._client is not None

    def describe(self) -> Mapping[str, str]:
        """Group, role and, once built, the client's region and endpoint."""
        described = {"group": self._group or "default", "role": self._role_arn}
        if self._client is not None:
            described = {**describe_client(self._client, "scheduler"), **described}
        return described

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
        """Create the one-time schedule that sends ``body`` to ``queue_arn`` at ``due_at``.

        Args:
            message_id: The step message's id; names the schedule (see module docstring).
            body: The exact SQS message body.
            due_at: When to send (epoch seconds; rounded up to the second).
            queue_arn: The target queue.
            message_group_id: The FIFO message group (FIFO queues only; such a queue
                needs content-based de-duplication, as Scheduler sends no dedup id).
            dead_letter_arn: Where Scheduler puts the message when it cannot deliver it
                (its retries exhausted): the queue's dead-letter queue. The role must
                be allowed to send there too.

        Returns:
            True when the schedule was created, False when it already existed.

        Raises:
            QueueUnavailable: Scheduler throttled or failed (retry the enqueue).
            ConfigurationError: Scheduler refused the request (role, group, region).
        """
        target: dict[str, Any] = {"Arn": queue_arn, "RoleArn": self._role_arn, "Input": body}
        if message_group_id is not None:
            target["SqsParameters"] = {"MessageGroupId": message_group_id}
        if dead_letter_arn is not None:
            target["DeadLetterConfig"] = {"Arn": dead_letter_arn}
        request: dict[str, Any] = {
            "Name": schedule_name(message_id),
            "ScheduleExpression": at_expression(due_at),
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Target": target,
        }
        if self._group:
            request["GroupName"] = self._group
        client = self._ensure_client()
        with translated(service="Scheduler", where=self._where, unavailable=QueueUnavailable):
            try:
                client.create_schedule(**request)
            except Exception as exc:
                if error_code(exc) != _CONFLICT:
                    raise
                log.debug("schedule %s exists already (duplicate enqueue)", request["Name"])
                return False
        return True

    @property
    def _where(self) -> str:
        return where(self.describe(), "group")

    def _ensure_client(self) -> SchedulerClient:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client
