"""Creating an SQS step queue and its dead-letter queue (tests; users without Terraform).

Terraform's ``queues.tf`` declares the same queues in a deployment; this is what the tests
and a user trying Relay on a bare account call instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import QueueUnavailable
from infra.aws._boto import translated

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType


@dataclass(frozen=True)
class CreatedQueue:
    """URLs of a queue made by ``create_queue`` and of its dead-letter queue."""

    queue_url: str
    dead_letter_queue_url: str


def create_queue(
    client: SQSClient,
    *,
    name: str,
    is_fifo: bool = False,
    max_receive_count: int = 5,
    visibility_timeout_seconds: int = 60,
    retention_seconds: int = 4 * 24 * 3600,
) -> CreatedQueue:
    """Create a queue and its dead-letter queue ``<name>-dlq`` (tests; users without Terraform).

    After ``max_receive_count`` receives without a delete, SQS moves a message to the
    dead-letter queue (kept 14 days) instead of delivering it again. On a FIFO queue an
    early receive of a delayed message counts too: leave room for it. FIFO queues get
    high-throughput mode (de-duplication and throughput per message group), which suits
    one group per message, and content-based de-duplication, which EventBridge Scheduler
    needs to send to a FIFO queue (our own sends carry explicit de-duplication ids).

    Returns:
        The URLs of the queue and of its dead-letter queue.
    """
    base = name.removesuffix(".fifo")
    suffix = ".fifo" if is_fifo else ""
    fifo: dict[QueueAttributeNameType, str] = (
        {
            "FifoQueue": "true",
            "ContentBasedDeduplication": "true",
            "DeduplicationScope": "messageGroup",
            "FifoThroughputLimit": "perMessageGroupId",
        }
        if is_fifo
        else {}
    )
    where_ = f"queue {base + suffix!r}"
    with translated(service="SQS", where=where_, unavailable=QueueUnavailable):
        dlq_url = client.create_queue(
            QueueName=f"{base}-dlq{suffix}",
            Attributes={**fifo, "MessageRetentionPeriod": str(14 * 24 * 3600)},
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        queue_url = client.create_queue(
            QueueName=base + suffix,
            Attributes={
                **fifo,
                "VisibilityTimeout": str(visibility_timeout_seconds),
                "MessageRetentionPeriod": str(retention_seconds),
                "RedrivePolicy": json.dumps(redrive),
            },
        )["QueueUrl"]
    return CreatedQueue(queue_url=queue_url, dead_letter_queue_url=dlq_url)
