"""The AWS state store: run headers and step records in one DynamoDB table.

Each run is one item collection, so ``load_run`` is one strongly consistent Query::

    pk = RUN#<run_id>   sk = RUN           the run header
    pk = RUN#<run_id>   sk = STEP#<name>   one item per step (fan-out does not contend
                                           on the header)

Every write is ``TransactWriteItems`` with one condition per item, named by what it
guards (see ``infra/aws/README.md``):

* ``attribute_not_exists(pk)``: a version-1 record is an insert (no double create, no
  second record for a step);
* ``#v = :expected``: a record replaces only the version it was derived from (two claims
  from one snapshot cannot both win; a commit fenced by a stale claim is rejected);
* ``ConditionCheck #v = :version``: a step the change read but does not write is still
  at that version.

Records are stored as whole items (``Put``), never patched, so the stored item is always
exactly one record version. JSON fields (``input``, ``output``) are JSON *text*: DynamoDB
numbers are decimals (boto3 refuses floats and would hand back ``Decimal``; ``2.0`` comes
back as ``2``), maps do not keep key order and NaN has no encoding, so a native map would
not round-trip what the other stores return. Timestamps are numbers written as
``repr(float)``, the shortest string that reads back as the same float.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.status import RunStatus
from core.errors import (
    ConcurrencyConflict,
    DefinitionError,
    EngineError,
    StoreUnavailable,
)
from core.ports.state_store import check_run_ids
from infra.aws import _dynamodb_items as items
from infra.aws._boto import (
    describe_client,
    engine_error,
    error_code,
    new_client,
    translated,
    where,
)
from infra.aws.dynamodb_provisioning import BY_SAGA_INDEX, BY_STATUS_INDEX, create_table

__all__ = ["BY_SAGA_INDEX", "BY_STATUS_INDEX", "DynamoDBStateStore", "create_table"]

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, QueryInputTypeDef

    from infra.aws._dynamodb_items import Item

log = logging.getLogger("relay.aws.dynamodb")

DEFAULT_RETENTION_SECONDS: Final = 30 * 24 * 3600.0
MAX_TRANSACTION_ITEMS: Final = 100
"""DynamoDB's limit on the items of one ``TransactWriteItems`` call."""


class DynamoDBStateStore:
    """A ``StateStore`` on one DynamoDB table (layout in the module docstring).

    ``list_runs`` and ``count_runs_by_status`` read two global secondary indexes:
    ``by_saga`` (``SAGA#<saga>``) and ``by_status`` (``STATUS#<status>``), both sorted by
    ``<created_at>#<run_id>`` so a descending Query is newest first. A status index rather
    than a filter on a saga index: the sweeper asks for the few active runs among
    millions of finished ones, and a filter would read (and bill) every finished run on
    the way. Neither index has a constant partition key, so no single index partition
    takes every run's writes. GSIs are eventually consistent: a run that changed status
    a moment ago may still be listed under the old one (typically for well under a second).

    When a run becomes terminal its header gets ``expires_at`` (``updated_at`` plus the
    retention) for DynamoDB's TTL, and so do its step records, so that no orphaned step
    outlives its header; a manual retry clears them again.

    Args:
        client: A boto3 DynamoDB client (thread-safe; shared by all threads).
        table_name: The table, created by Terraform or ``create_table``.
        retention_seconds: How long a finished run is kept; None disables expiry.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        *,
        table_name: str,
        retention_seconds: float | None = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self._client = client
        self._table = table_name
        self._retention = retention_seconds

    @classmethod
    def from_settings(
        cls,
        *,
        table_name: str,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        retention_seconds: float | None = DEFAULT_RETENTION_SECONDS,
    ) -> DynamoDBStateStore:
        """A store with its own client; ``AWS_ENDPOINT_URL`` and the usual AWS variables apply."""
        client = new_client("dynamodb", region_name=region_name, endpoint_url=endpoint_url)
        return cls(client, table_name=table_name, retention_seconds=retention_seconds)

    @property
    def delivers_outbox(self) -> bool:
        """False: SQS is not part of a DynamoDB transaction; the engine enqueues after."""
        return False

    def describe(self) -> Mapping[str, str]:
        """Region, endpoint and table, for logs and errors."""
        return {**describe_client(self._client, "dynamodb"), "table": self._table}

    # -- writes ------------------------------------------------------------------------

    def create_run(
        self, *, run: RunRecord, steps: Sequence[StepRecord], outbox: Sequence[Message]
    ) -> tuple[RunRecord, bool]:
        """Create a run with its step records (one transaction), unless it exists.

        ``outbox`` is not delivered: ``delivers_outbox`` is False.

        Returns:
            The stored header and whether this call created it.

        Raises:
            ConcurrencyConflict: step records of this run id exist without a header.
            DefinitionError: the run has more steps than one transaction can write.
            StoreUnavailable: DynamoDB throttled or failed; nothing was written.
        """
        check_run_ids(run.run_id, [run], steps)
        expires_at = self._expiry(run)
        ops = [
            items.put_op(
                "run header", items.run_item(run, expires_at), expected=0, table=self._table
            )
        ]
        ops += [
            items.put_op(
                f"step {s.name!r}", items.step_item(s, expires_at), expected=0, table=self._table
            )
            for s in steps
        ]
        try:
            self._transact(run.run_id, ops)
        except items.ConditionFailed as failed:
            if failed.op is not ops[0]:
                raise ConcurrencyConflict(
                    run_id=run.run_id,
                    detail=f"{failed.op.label} exists without a run header",
                ) from failed
            if failed.item is not None:
                return items.run_from_item(failed.item), False
            stored = self._get_header(run.run_id)
            if stored is None:  # deleted in between (TTL): let the caller try again
                raise StoreUnavailable(
                    f"run {run.run_id!r} existed and vanished during create; retry ({self._where})"
                ) from failed
            return stored, False
        except ConcurrencyConflict:
            # Another create of this run id was in flight (TransactionConflict).
            stored = self._get_header(run.run_id)
            if stored is None:
                raise
            return stored, False
        return run, True

    def apply(self, *, change: StateChange) -> None:
        """Write ``change`` in one transaction if every version precondition holds.

        Raises:
            ConcurrencyConflict: a record or check no longer matches; nothing was written.
            DefinitionError: the change touches more items than one transaction can.
            StoreUnavailable: DynamoDB throttled or failed; nothing was written.
        """
        run_id = change.run_id
        check_run_ids(run_id, [change.run] if change.run is not None else [], change.steps)
        expires_at = self._expiry(change.run) if change.run is not None else None
        try:
            self._transact(run_id, self._change_ops(change, expires_at, guard_revival=True))
        except items.ConditionFailed as failed:
            if not failed.is_revival:
                raise failed.conflict(run_id) from failed
            # Retry of a finished run: clear the steps' TTL first, then write. A failure
            # after the clearing leaves a finished run whose steps lack a TTL, which the
            # next terminal commit stamps again; the reverse order could let TTL delete
            # the steps of a running run.
            self._stamp_steps(
                run_id, None, skip={s.name for s in change.steps}, is_best_effort=False
            )
            try:
                self._transact(run_id, self._change_ops(change, None, guard_revival=False))
            except items.ConditionFailed as again:
                raise again.conflict(run_id) from again
        if expires_at is not None:
            self._stamp_steps(
                run_id, expires_at, skip={s.name for s in change.steps}, is_best_effort=True
            )

    # -- reads -------------------------------------------------------------------------

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        """Read a run header and all its step records: one strongly consistent Query."""
        params: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": items.pk_of(run_id)}},
            "ConsistentRead": True,
        }
        header: RunRecord | None = None
        steps: dict[StepName, StepRecord] = {}
        for item in self._query(params):
            sk = item["sk"]["S"]
            if sk == items.HEADER_SK:
                header = items.run_from_item(item)
            elif sk.startswith(items.STEP_PREFIX):
                step = items.step_from_item(item)
                steps[step.name] = step
        if header is None:
            return None
        return RunSnapshot(run=header, steps=steps)

    def list_runs(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Run headers, newest first (ties by run id, descending), filtered by saga/status.

        One Query on ``by_saga`` when only a saga is given; otherwise one Query per wanted
        status on ``by_status`` (all eight when no status is given), merged.
        """
        if limit <= 0 or (statuses is not None and not statuses):
            return []
        if statuses is None and saga is not None:
            queries = [self._index_query(BY_SAGA_INDEX, "gsi1pk", f"SAGA#{saga}", saga=None)]
        else:
            wanted = list(RunStatus) if statuses is None else list(dict.fromkeys(statuses))
            queries = [
                self._index_query(BY_STATUS_INDEX, "gsi2pk", f"STATUS#{s.value}", saga=saga)
                for s in wanted
            ]
        newest: dict[str, RunRecord] = {}
        for params in queries:
            params["ScanIndexForward"] = False
            for item in self._query(params, want=limit):
                run = items.run_from_item(item)
                seen = newest.get(run.run_id)
                # An index mid-way through a status change may list a run twice.
                if seen is None or seen.version < run.version:
                    newest[run.run_id] = run
        runs = [
            r
            for r in newest.values()
            if (saga is None or r.saga == saga) and (statuses is None or r.status in statuses)
        ]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return runs[:limit]

    def count_runs_by_status(self, *, saga: str | None = None) -> Mapping[RunStatus, int]:
        """How many runs are in each status; every status is present, zero when unused.

        Cost: one ``Select=COUNT`` Query per status on ``by_status``, each reading (and
        billing) the whole status partition, filtered by saga after the read. Fine for
        progress displays and benchmarks; a hot path would keep counters instead.
        """
        counts = dict.fromkeys(RunStatus, 0)
        for status in RunStatus:
            params = self._index_query(BY_STATUS_INDEX, "gsi2pk", f"STATUS#{status}", saga=saga)
            params["Select"] = "COUNT"
            counts[status] = sum(page.get("Count", 0) for page in self._pages(params))
        return counts

    # -- internals ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return where(self.describe(), "table")

    def _expiry(self, run: RunRecord) -> float | None:
        if self._retention is None or not run.status.is_terminal:
            return None
        return float(math.ceil(run.updated_at + self._retention))

    def _change_ops(
        self, change: StateChange, expires_at: float | None, *, guard_revival: bool
    ) -> list[items.Op]:
        table = self._table
        ops: list[items.Op] = []
        if change.run is not None:
            condition = items.FOLLOWS_ACTIVE if guard_revival and expires_at is None else None
            ops.append(
                items.put_op(
                    "run header",
                    items.run_item(change.run, expires_at),
                    expected=change.run.version - 1,
                    table=table,
                    condition=condition,
                )
            )
        written = {step.name: step for step in change.steps}
        for step in change.steps:
            ops.append(
                items.put_op(
                    f"step {step.name!r}",
                    items.step_item(step, expires_at),
                    expected=step.version - 1,
                    table=table,
                )
            )
        for check in change.checks:
            label = f"checked step {check.step!r}"
            if check.step in written:
                # One transaction may not touch an item twice; the write's own condition
                # already asserts a version, and both cannot hold if they differ.
                if written[check.step].version - 1 != check.version:
                    raise ConcurrencyConflict(
                        run_id=change.run_id,
                        detail=f"{label}: checked at version {check.version} but written "
                        f"over version {written[check.step].version - 1}",
                    )
                continue
            ops.append(items.check_op(label, change.run_id, check.step, check.version, table=table))
        return ops

    def _transact(self, run_id: str, ops: list[items.Op]) -> None:
        """Run ``ops`` as one transaction; a failed condition raises ``items.ConditionFailed``."""
        if len(ops) > MAX_TRANSACTION_ITEMS:
            raise DefinitionError(
                f"a change to run {run_id!r} writes or checks {len(ops)} items; DynamoDB "
                f"transactions hold at most {MAX_TRANSACTION_ITEMS}. Split wide fan-outs "
                "into smaller groups of steps"
            )
        try:
            # The token makes botocore's own retry of a request that did commit succeed,
            # instead of failing its conditions against our own write.
            self._client.transact_write_items(
                TransactItems=[op.write for op in ops], ClientRequestToken=str(uuid.uuid4())
            )
        except Exception as exc:
            if error_code(exc) == "TransactionCanceledException":
                raise items.cancellation_error(exc, run_id, ops, where=self._where) from exc
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        """Raise botocore exceptions from the block as ``core.errors``, chained."""
        return translated(service="DynamoDB", where=self._where, unavailable=StoreUnavailable)

    def _error(self, exc: Exception) -> EngineError | None:
        return engine_error(
            exc, service="DynamoDB", where=self._where, unavailable=StoreUnavailable
        )

    def _pages(self, params: QueryInputTypeDef) -> Iterator[Mapping[str, Any]]:
        while True:
            with self._translated():
                page = self._client.query(**params)
            yield page
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    def _query(self, params: QueryInputTypeDef, want: int | None = None) -> Iterator[Item]:
        found = 0
        for page in self._pages(params):
            for item in page.get("Items", []):
                yield item
                found += 1
                if want is not None and found >= want:
                    return

    def _index_query(
        self, index: str, key: str, value: str, *, saga: str | None
    ) -> QueryInputTypeDef:
        params: QueryInputTypeDef = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{key} = :key",
            "ExpressionAttributeValues": {":key": {"S": value}},
        }
        if saga is not None:
            params["FilterExpression"] = "#saga = :saga"
            params["ExpressionAttributeNames"] = {"#saga": "saga"}
            params["ExpressionAttributeValues"] = {":key": {"S": value}, ":saga": {"S": saga}}
        return params

    def _get_header(self, run_id: str) -> RunRecord | None:
        with self._translated():
            response = self._client.get_item(
                TableName=self._table,
                Key=items.key_of(run_id, items.HEADER_SK),
                ConsistentRead=True,
            )
        item = response.get("Item")
        return None if item is None else items.run_from_item(item)

    def _stamp_steps(
        self,
        run_id: str,
        expires_at: float | None,
        *,
        skip: Collection[str],
        is_best_effort: bool,
    ) -> None:
        """Set (or with None, remove) ``expires_at`` on the run's step items.

        Each update is conditioned on the version it read, so it never touches a record
        written since; such a record was written by its own change.
        """
        params: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :steps)",
            "ExpressionAttributeValues": {
                ":pk": {"S": items.pk_of(run_id)},
                ":steps": {"S": items.STEP_PREFIX},
            },
            "ProjectionExpression": "sk, #v, expires_at",
            "ExpressionAttributeNames": {"#v": "version"},
            "ConsistentRead": True,
        }
        try:
            for item in self._query(params):
                if item["sk"]["S"][len(items.STEP_PREFIX) :] in skip:
                    continue
                stored = items.read_number(item, items.TTL_ATTRIBUTE)
                if stored == (None if expires_at is None else int(expires_at)):
                    continue
                self._update_expiry(run_id, item, expires_at)
        except EngineError as exc:
            if not is_best_effort:
                raise
            log.warning(
                "could not set the TTL of the steps of a finished run; they stay until the "
                "next terminal commit: %s",
                exc,
                extra={"run_id": run_id},
            )

    def _update_expiry(
        self, run_id: str, item: Mapping[str, Any], expires_at: float | None
    ) -> None:
        values: dict[str, AttributeValueTypeDef] = {":version": item["version"]}
        if expires_at is None:
            update = "REMOVE expires_at"
        else:
            update = "SET expires_at = :expires"
            values[":expires"] = items.number(int(expires_at))
        try:
            self._client.update_item(
                TableName=self._table,
                Key=items.key_of(run_id, item["sk"]["S"]),
                UpdateExpression=update,
                ConditionExpression=items.IS_AT,
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc
