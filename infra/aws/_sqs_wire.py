"""The SQS wire format of step messages and the receipts ``SqsTaskQueue`` hands out.

Bodies, FIFO de-duplication ids, SQS's whole-second delays and batch limits, and which
error codes mean "a stale receipt" (which acks and releases nothing): the details that
``infra/aws/sqs.py`` relies on but that are not the queue's behaviour.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any, Final

from core.domain.records import Message

MAX_DELAY_SECONDS: Final = 900
"""SQS's limit on ``DelaySeconds``; longer delays hop (see ``SqsTaskQueue``)."""
MAX_VISIBILITY_SECONDS: Final = 12 * 3600
"""SQS's limit on a message's visibility timeout."""
BATCH: Final = 10
RECEIPT_SEPARATOR: Final = "|"


# What SQS answers for a receipt handle that expired or whose message is gone: a
# stale receipt acks and releases nothing, as the contract asks.
STALE_RECEIPT_CODES: Final = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)


def parse_receipt(receipt: str) -> tuple[str, str] | None:
    """``(sqs message id, receipt handle)`` of a receipt this queue issued, or None."""
    message_id, separator, handle = receipt.partition(RECEIPT_SEPARATOR)
    if not separator or not message_id or not handle:
        return None
    return message_id, handle


def dead_letter_arn(redrive_policy: str | None) -> str | None:
    """The ``deadLetterTargetArn`` of a queue's redrive policy (None without one)."""
    if not redrive_policy:
        return None
    try:
        target = json.loads(redrive_policy).get("deadLetterTargetArn")
    except (ValueError, AttributeError):
        return None
    return target if isinstance(target, str) and target else None


def body(message: Message) -> str:
    """The SQS message body of ``message`` (also a schedule's Input)."""
    return json.dumps(message.to_json(), separators=(",", ":"), ensure_ascii=False)


def digest(message: Message) -> str:
    """FIFO de-duplication id and message group of ``message``: sha256 of its id."""
    return hashlib.sha256(message.message_id.encode()).hexdigest()


def ahead(message: Message, now: float) -> float:
    return 0.0 if message.not_before is None else message.not_before - now


def whole_seconds(seconds: float) -> int:
    """SQS takes whole seconds: round up (never early), forgiving float noise of 1 ms."""
    return max(0, math.ceil(seconds - 0.001))


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
