"""DynamoDB items of the state store: key schema, record codec and transaction items.

Private to ``infra.aws.dynamodb``; the layout and the conditions are explained there and
in ``infra/aws/README.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from core.domain.audit import audit_from_json, audit_to_json
from core.domain.records import RunId, RunRecord, StepName, StepRecord
from core.domain.status import RunStatus, StepStatus
from core.errors import ConcurrencyConflict, StoreUnavailable
from infra.aws._boto import rejected

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

    Item = dict[str, AttributeValueTypeDef]

RUN_PREFIX: Final = "RUN#"
HEADER_SK: Final = "RUN"
STEP_PREFIX: Final = "STEP#"
TTL_ATTRIBUTE: Final = "expires_at"

INSERT: Final = "attribute_not_exists(pk)"
FOLLOWS: Final = "#v = :expected"
# A non-terminal header must not silently revive a run whose items carry a TTL: the
# failure sends apply() down the revival path, which clears the steps' TTL first.
FOLLOWS_ACTIVE: Final = "#v = :expected AND attribute_not_exists(expires_at)"
IS_AT: Final = "#v = :version"


@dataclass(frozen=True, eq=False)
class Op:
    """One item of a transaction, with what it is called in conflict messages."""

    label: str
    expected: int
    write: TransactWriteItemTypeDef


class ConditionFailed(Exception):
    """A transaction item's condition failed; ``item`` is the stored item, if any."""

    def __init__(self, op: Op, item: Mapping[str, Any] | None) -> None:
        super().__init__(op.label)
        self.op = op
        self.item = item

    @property
    def is_revival(self) -> bool:
        """True when the header was at the expected version but carried a TTL."""
        item = self.item
        return (
            self.op.label == "run header"
            and item is not None
            and int(item["version"]["N"]) == self.op.expected
            and TTL_ATTRIBUTE in item
        )

    def conflict(self, run_id: str) -> ConcurrencyConflict:
        """The error for the caller: which item, which version was expected and found."""
        expected = self.op.expected
        expected_text = "no record" if expected == 0 else f"version {expected}"
        found = "no record" if self.item is None else f"version {self.item['version']['N']}"
        return ConcurrencyConflict(
            run_id=run_id, detail=f"{self.op.label}: expected {expected_text}, found {found}"
        )


def cancellation_error(exc: Exception, run_id: str, ops: list[Op], *, where: str) -> Exception:
    """What a ``TransactionCanceledException`` means, from its reasons (one per op, in order).

    A failed condition becomes ``ConditionFailed`` (the store turns it into a conflict or
    a revival), a racing transaction ``ConcurrencyConflict``, throttling
    ``StoreUnavailable``; anything else is a request DynamoDB refused (``RequestRejected``).
    """
    reasons: list[Mapping[str, Any]] = getattr(exc, "response", {}).get("CancellationReasons", [])
    codes = [str(reason.get("Code", "None")) for reason in reasons]
    for op, reason, code in zip(ops, reasons, codes, strict=False):
        if code == "ConditionalCheckFailed":
            return ConditionFailed(op, reason.get("Item"))
    for op, code in zip(ops, codes, strict=False):
        if code == "TransactionConflict":
            # Another transaction was writing this item: our read is likely stale. Real
            # DynamoDB answers racing claims this way rather than with a failed condition,
            # so it must be a conflict for the claim race to have one winner.
            return ConcurrencyConflict(
                run_id=run_id, detail=f"{op.label}: another write to it was in flight"
            )
    if any(c in ("ThrottlingError", "ProvisionedThroughputExceeded") for c in codes):
        return StoreUnavailable(f"DynamoDB throttled a write to run {run_id!r} ({where})")
    # ValidationError (an item over 400 KB, a bad value) or another refusal.
    refusal = f"{', '.join(codes)} ({exc})"
    return rejected("DynamoDB", operation=f"a write to run {run_id!r}", where=where, reason=refusal)


def put_op(
    label: str, item: Item, *, expected: int, table: str, condition: str | None = None
) -> Op:
    """A conditional ``Put``: an insert when ``expected`` is 0, else ``#v = :expected``."""
    if expected == 0:
        write: TransactWriteItemTypeDef = {
            "Put": {
                "TableName": table,
                "Item": item,
                "ConditionExpression": INSERT,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    else:
        write = {
            "Put": {
                "TableName": table,
                "Item": item,
                "ConditionExpression": condition or FOLLOWS,
                "ExpressionAttributeNames": {"#v": "version"},
                "ExpressionAttributeValues": {":expected": number(expected)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    return Op(label, expected, write)


def check_op(label: str, run_id: str, step: str, version: int, *, table: str) -> Op:
    """A ``ConditionCheck`` that step ``step`` is still at ``version``."""
    write: TransactWriteItemTypeDef = {
        "ConditionCheck": {
            "TableName": table,
            "Key": key_of(run_id, STEP_PREFIX + step),
            "ConditionExpression": IS_AT,
            "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": {":version": number(version)},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    return Op(label, version, write)


# -- item codec --------------------------------------------------------------------------


def pk_of(run_id: str) -> str:
    return RUN_PREFIX + run_id


def key_of(run_id: str, sk: str) -> Item:
    return {"pk": {"S": pk_of(run_id)}, "sk": {"S": sk}}


def number(value: float) -> AttributeValueTypeDef:
    return {"N": repr(value)}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def order_key(created_at: float, run_id: str) -> str:
    """Sorts like ``(created_at, run_id)``: fixed-width decimal seconds, then the id."""
    return f"{created_at:021.9f}#{run_id}"


def set_optional(item: Item, name: str, value: str | float | None) -> None:
    if value is None:
        return
    item[name] = {"S": value} if isinstance(value, str) else number(value)


def run_item(run: RunRecord, expires_at: float | None) -> Item:
    order = order_key(run.created_at, run.run_id)
    item: Item = {
        **key_of(run.run_id, HEADER_SK),
        "run_id": {"S": run.run_id},
        "saga": {"S": run.saga},
        "status": {"S": run.status.value},
        "input": {"S": dumps(run.input)},
        "output": {"S": dumps(run.output)},
        "definition_hash": {"S": run.definition_hash},
        "created_at": number(run.created_at),
        "updated_at": number(run.updated_at),
        "is_cancel_requested": {"BOOL": run.is_cancel_requested},
        "version": number(run.version),
        "redrive_count": number(run.redrive_count),
        "gsi1pk": {"S": f"SAGA#{run.saga}"},
        "gsi1sk": {"S": order},
        "gsi2pk": {"S": f"STATUS#{run.status.value}"},
        "gsi2sk": {"S": order},
    }
    set_optional(item, "error", run.error)
    set_optional(item, "compensation_reason", run.compensation_reason)
    set_optional(item, "idempotency_key", run.idempotency_key)
    set_optional(item, "redriven_at", run.redriven_at)
    set_optional(item, "audit", audit_to_json(run.audit))
    set_optional(item, "error_detail", run.error_detail)
    if expires_at is not None:
        item[TTL_ATTRIBUTE] = number(int(expires_at))
    return item


def run_from_item(item: Mapping[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=RunId(item["run_id"]["S"]),
        saga=item["saga"]["S"],
        status=RunStatus(item["status"]["S"]),
        input=json.loads(item["input"]["S"]),
        definition_hash=item["definition_hash"]["S"],
        created_at=float(item["created_at"]["N"]),
        updated_at=float(item["updated_at"]["N"]),
        idempotency_key=read_string(item, "idempotency_key"),
        output=json.loads(item["output"]["S"]),
        error=read_string(item, "error"),
        compensation_reason=read_string(item, "compensation_reason"),
        is_cancel_requested=bool(item["is_cancel_requested"]["BOOL"]),
        version=int(item["version"]["N"]),
        # Absent from items written before the sweeper kept a back-off.
        redrive_count=int(read_number(item, "redrive_count") or 0),
        redriven_at=read_number(item, "redriven_at"),
        audit=audit_from_json(read_string(item, "audit")),  # absent before audits existed
        error_detail=read_string(item, "error_detail"),  # absent before issue 10
    )


def step_item(step: StepRecord, expires_at: float | None) -> Item:
    item: Item = {
        **key_of(step.run_id, STEP_PREFIX + step.name),
        "status": {"S": step.status.value},
        "attempt": number(step.attempt),
        "budget_start": number(step.budget_start),
        "compensation_attempts": number(step.compensation_attempts),
        "output": {"S": dumps(step.output)},
        "updated_at": number(step.updated_at),
        "version": number(step.version),
    }
    set_optional(item, "lease_until", step.lease_until)
    set_optional(item, "retry_at", step.retry_at)
    set_optional(item, "error", step.error)
    set_optional(item, "started_at", step.started_at)
    set_optional(item, "finished_at", step.finished_at)
    set_optional(item, "error_detail", step.error_detail)
    if expires_at is not None:
        item[TTL_ATTRIBUTE] = number(int(expires_at))
    return item


def step_from_item(item: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        run_id=RunId(item["pk"]["S"][len(RUN_PREFIX) :]),
        name=StepName(item["sk"]["S"][len(STEP_PREFIX) :]),
        status=StepStatus(item["status"]["S"]),
        attempt=int(item["attempt"]["N"]),
        budget_start=int(item["budget_start"]["N"]),
        # Absent on items written before compensation attempts were counted apart.
        compensation_attempts=int(read_number(item, "compensation_attempts") or 0),
        lease_until=read_number(item, "lease_until"),
        retry_at=read_number(item, "retry_at"),
        output=json.loads(item["output"]["S"]),
        error=read_string(item, "error"),
        started_at=read_number(item, "started_at"),
        finished_at=read_number(item, "finished_at"),
        updated_at=float(item["updated_at"]["N"]),
        version=int(item["version"]["N"]),
        error_detail=read_string(item, "error_detail"),  # absent before issue 10
    )


def read_string(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def read_number(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])
