"""moto_server with its requests serialised; run as a script (see tests/support/aws.py).

moto's in-memory backends check a condition and then write without a lock, so two
concurrent requests can both pass the same condition: on a plain ``moto_server``, 20
threads racing a conditional ``TransactWriteItems`` or ``UpdateItem`` on one item
produced two winners in about 1 of 30 trials, and SQS FIFO de-duplication and receives
race the same way. DynamoDB, SQS and S3 are atomic per item, so the tests would be
testing moto's race rather than our conditions. Handling one request at a time restores
the atomicity. SQS long polls (``WaitTimeSeconds`` above zero, or left to the queue's
default) bypass the lock so that they cannot stall every other request.

Two emulator costs that grow with the data are removed, without changing what moto
answers (``RELAY_MOTO_UNPATCHED=1`` keeps moto's own code, to compare):

* ReceiveMessage checks each message it hands out against the queue's retention period
  by computing *all* the queue's attributes, among them the approximate counts, each a
  pass over every message in the queue: a receive of ten cost eleven passes (1.4 s with
  1,000 messages queued; moto 4.2 to 5.2.5), so the deeper the queue, the slower every
  receive, and a slow consumer slowed itself down further. The patched check reads the
  retention period alone.
* TransactWriteItems backs up the table for its rollback with a deep copy *per item* of
  the transaction (a claim with five version checks copied the table six times: ~170 ms
  per transaction at 100 runs). The copies are taken before any write, so one copy per
  table (~170 ms per claim at 100 runs). The patched call backs up the items the
  transaction names, the only state it changes on a table without a stream, and puts
  them back on failure.
* Query on a table's key lists, sorts and filters *every* item of the table to find one
  partition (``load_run``: ~100 ms at 100 runs on a busy machine). The patched query
  hands moto's own code that partition alone; it filters and sorts it as before.

Every request is counted by operation (``X-Amz-Target``, else method and first path
segment) with the time spent handling it and waiting for the lock; ``GET
/relay-stats/`` answers those counters as JSON, so a test can say where moto's time
went (``tests/support/aws.py``: ``moto_stats``).

Usage: ``python _moto_server.py -H 127.0.0.1 -p PORT`` (the ``moto_server`` options).
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import moto.server

_lock = threading.Lock()
STATS_PATH = "/relay-stats/"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Stats:
    """Per-operation request counters (count, handling seconds, lock-wait seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[str, list[float]] = {}

    def add(self, op: str, handled_seconds: float, waited_seconds: float) -> None:
        with self._lock:
            entry = self._ops.setdefault(op, [0, 0.0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += handled_seconds
            entry[2] += waited_seconds
            entry[3] = max(entry[3], handled_seconds)

    def to_json(self) -> bytes:
        with self._lock:
            ops = {
                op: {
                    "count": int(count),
                    "seconds": round(handled, 3),
                    "lock_wait_seconds": round(waited, 3),
                    "max_seconds": round(longest, 4),
                }
                for op, (count, handled, waited, longest) in sorted(self._ops.items())
            }
        return json.dumps(ops).encode()


class SerialisedApp:
    """A WSGI wrapper running one request at a time (except SQS long polls)."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self.stats = _Stats()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == STATS_PATH:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [self.stats.to_json()]
        op = _operation(environ)
        if _is_long_poll(environ):
            began = time.perf_counter()
            try:
                return list(self._app(environ, start_response))
            finally:
                self.stats.add(op + " (long poll)", time.perf_counter() - began, 0.0)
        asked = time.perf_counter()
        with _lock:
            began = time.perf_counter()
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                self.stats.add(op, time.perf_counter() - began, began - asked)


def _operation(environ: dict[str, Any]) -> str:
    """The API operation of a request: ``X-Amz-Target`` (JSON protocols) or method + path."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target)
    segment = str(environ.get("PATH_INFO", "/")).strip("/").split("/", 1)[0]
    return f"{environ.get('REQUEST_METHOD', '?')} /{segment}"


def _is_long_poll(environ: dict[str, Any]) -> bool:
    """True for an SQS ReceiveMessage (JSON protocol) that may wait for messages."""
    if environ.get("HTTP_X_AMZ_TARGET") != "AmazonSQS.ReceiveMessage":
        return False
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        wait = json.loads(body or b"{}").get("WaitTimeSeconds")
    except ValueError:
        return True
    return wait is None or int(wait) > 0


def _patch_retention_check() -> None:
    """Make moto's per-message retention check read one attribute (see module docstring)."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    if not hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        return  # another moto: nothing to speed up, or already fixed

    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Any
    ) -> bool:
        queue: Any = self.get_queue(queue_name)
        retention_seconds = int(queue.message_retention_period)
        return bool(unix_time() < retention_seconds + message.sent_timestamp / 1000)

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


class _TableCopies:
    """``copy`` as moto's DynamoDB module sees it: no table copies while ``skip_tables``."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type
        self.skip_tables = False

    def deepcopy(self, value: Any) -> Any:
        if self.skip_tables and isinstance(value, self._table_type):
            return value  # the item backups of transact_write_items below stand in
        return copy.deepcopy(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _patch_transaction_backups() -> None:
    """Back up the items a transaction writes instead of whole tables (module docstring).

    moto rolls a failed transaction back by putting its table copies back; here the
    tables are not copied, and the items the transaction names are put back instead:
    the only state a transaction changes on a table without a stream. A transaction
    whose keys cannot be read, or on a table with a stream, takes moto's own path.
    """
    import moto.dynamodb.models as dynamodb_models

    if getattr(dynamodb_models, "copy", None) is not copy:
        return  # another moto: leave it as it is
    backend_type = dynamodb_models.DynamoDBBackend
    original = backend_type.transact_write_items
    copies = _TableCopies(dynamodb_models.Table)
    dynamodb_models.copy = copies  # type: ignore[assignment]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = _item_backups(self, transact_items)
        if backups is None:
            return original(self, transact_items)
        # Requests are serialised (SerialisedApp): one transaction runs at a time.
        copies.skip_tables = True
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(backups):
                _put_back(table, hash_key, range_key, item)
            raise
        finally:
            copies.skip_tables = False

    backend_type.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _item_backups(
    backend: Any, transact_items: list[dict[str, Any]]
) -> list[tuple[Any, Any, Any, Any]] | None:
    """``(table, hash key, range key, copy of the item or None)`` per operation, or None."""
    backups = []
    for entry in transact_items:
        try:
            _, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            if table.stream_shard is not None:
                return None
            attributes = op["Item"] if "Item" in op else op["Key"]
            key = {table.hash_key_attr: attributes[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attributes[table.range_key_attr]
            hash_key, range_key = backend.get_keys_value(table, key)
            current = table.get_item(hash_key, range_key)
        except Exception:
            return None  # moto's own validation will answer this request
        backups.append((table, hash_key, range_key, copy.deepcopy(current)))
    return backups


def _put_back(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    """Restore one item as it was before the transaction (None: it did not exist)."""
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
    elif item is None:
        table.items.get(hash_key, {}).pop(range_key, None)
    else:
        table.items[hash_key][range_key] = item


def _patch_partition_queries() -> None:
    """Let a Query on the table's own key look at its partition only (module docstring)."""
    from moto.dynamodb.models.table import Table

    original = Table.query
    signature = inspect.signature(original)
    if "index_name" not in signature.parameters or "hash_key" not in signature.parameters:
        return  # another moto: leave it as it is

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, *args, **kwargs).arguments
        hash_key = arguments.get("hash_key")
        if arguments.get("index_name") or hash_key is None or self.range_key_attr is None:
            return original(self, *args, **kwargs)
        partition = list(self.items.get(hash_key, {}).values())
        # moto's query takes the items with this hash key from all_items() and sorts
        # them by range key: given only the partition, it returns the same.
        self.all_items = lambda: partition
        try:
            return original(self, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query  # type: ignore[method-assign]


def main() -> None:
    """Start moto's own server entry point with the serialising wrapper around its app."""
    if os.environ.get("RELAY_MOTO_UNPATCHED") != "1":
        _patch_retention_check()
        _patch_transaction_backups()
        _patch_partition_queries()
    run_simple = moto.server.run_simple

    def serialised_run_simple(host: str, port: int, app: WsgiApp, **options: Any) -> None:
        run_simple(host, port, SerialisedApp(app), **options)

    moto.server.run_simple = serialised_run_simple  # type: ignore[assignment]
    moto.server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
