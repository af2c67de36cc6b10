"""Step outputs too large to keep inline, as S3 objects in one bucket.

Layout: ``<prefix><run_id>/<step>/<result_id>.json`` (``.parquet`` for Arrow tables,
``.pkl`` when the caller asked for pickle). Each object saved with ``save`` carries its
first-save time in the ``relay-saved-at`` user metadata, which is what ``list_results``
orders by: S3 lists keys alphabetically and ``LastModified`` changes on every overwrite.
Chunks (``chunk-NNNNNNNNNN``) order by key, so listing them needs no HeadObject.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from core.errors import StoreUnavailable
from core.ports.io_codec import (
    CONTENT_TYPES,
    SUFFIXES,
    check_key_component,
    check_result_id,
    chunk_index,
    chunk_result_id,
    decode_value,
    encode_value,
    split_name,
)
from core.ports.io_manager import Serializer
from infra.aws._boto import (
    describe_client,
    engine_error,
    error_code,
    new_client,
    translated,
    where,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

_SAVED_AT: Final = "relay-saved-at"
_FINISHED_AT: Final = "relay-finished-at"
RETENTION_TAG: Final = "relay-retention=finished"
"""The tag of objects whose run ended; the bucket's lifecycle rule filters on it."""
_MISSING_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_MAX_KEY_BYTES: Final = 1024
_DELETE_BATCH: Final = 1000
_CHUNK_KEY_PREFIX: Final = "chunk-"


class S3IOManager:
    """An ``IOManager`` keeping each result in its own S3 object.

    A PutObject is atomic and, once it returns, durable and strongly consistent for
    reads, so the object exists before the step commit that references it.

    Calls: ``save`` = HeadObject (keeps the first-save time) + DeleteObjects (the other
    formats) + PutObject; ``save_chunk`` the same without the HeadObject; ``load`` = one
    GetObject per format tried (JSON, Parquet, pickle); ``list_results`` = ListObjectsV2 +
    one HeadObject per result; ``list_chunks`` and ``list_steps`` = ListObjectsV2;
    ``clear_run`` = ListObjectsV2 + DeleteObjects per 1,000 objects;
    ``mark_run_finished`` = ListObjectsV2 + HeadObject and CopyObject per object.

    Args:
        client: A boto3 S3 client (thread-safe).
        bucket: The bucket; created by Terraform (or ``client.create_bucket`` in tests).
        prefix: Prepended to every key as is (end it with ``/`` for a folder).
    """

    def __init__(self, client: S3Client, *, bucket: str, prefix: str = "") -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._lock = threading.Lock()
        self._last_saved_ns = 0

    @classmethod
    def from_settings(
        cls,
        *,
        bucket: str,
        prefix: str = "",
        region_name: str | None = None,
        endpoint_url: str | None = None,
    ) -> S3IOManager:
        """A manager with its own client; ``AWS_ENDPOINT_URL`` and the usual AWS variables apply."""
        client = new_client("s3", region_name=region_name, endpoint_url=endpoint_url)
        return cls(client, bucket=bucket, prefix=prefix)

    def describe(self) -> Mapping[str, str]:
        """Region, endpoint, bucket and prefix, for logs and errors."""
        return {
            **describe_client(self._client, "s3"),
            "bucket": self._bucket,
            "prefix": self._prefix,
        }

    def save(
        self,
        *,
        run_id: str,
        step: str,
        result_id: str,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store ``value``, replacing any earlier result with this key (in any format).

        Returns:
            The ``s3://bucket/key`` URL of the object.

        Raises:
            TypeError: the chosen format cannot hold ``value``.
            ValueError: an id is not a safe key component.
            MissingExtraError: Parquet without pyarrow installed.
            StoreUnavailable: S3 throttled or failed.
        """
        stem = self._stem(run_id, step, check_result_id(result_id))
        return self._put(stem, value, serializer, is_ordered=True)

    def save_chunk(
        self,
        *,
        run_id: str,
        step: str,
        index: int,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store chunk ``index``, replacing an earlier save (no first-save time: names sort)."""
        return self._put(self._stem(run_id, step, chunk_result_id(index)), value, serializer)

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        return self._get(self._stem(run_id, step, check_result_id(result_id)))

    def load_chunk(self, *, run_id: str, step: str, index: int) -> Any:
        """Return chunk ``index``; raises ``KeyError`` when it was never saved."""
        return self._get(self._stem(run_id, step, chunk_result_id(index)))

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The ids saved with ``save`` for one step of one run, in first-save order."""
        folder = self._step_folder(run_id, step)
        order: dict[str, tuple[int, str]] = {}
        for key in self._keys(folder):
            parts = split_name(key[len(folder) :])
            if parts is None or "/" in parts[0] or chunk_index(parts[0]) is not None:
                continue
            result_id = parts[0]
            saved_at = self._saved_at(key)
            if saved_at is None:  # deleted since the listing
                continue
            rank = (saved_at, result_id)
            order[result_id] = min(order.get(result_id, rank), rank)
        return sorted(order, key=order.__getitem__)

    def list_chunks(self, *, run_id: str, step: str) -> list[int]:
        """The chunk indexes stored for one step of one run, ascending (ListObjectsV2 only)."""
        folder = self._step_folder(run_id, step)
        indexes = {
            chunk_index(parts[0])
            for key in self._keys(folder + _CHUNK_KEY_PREFIX)
            if (parts := split_name(key[len(folder) :])) is not None
        }
        return sorted(i for i in indexes if i is not None)

    def list_steps(self, *, run_id: str) -> list[str]:
        """The steps of ``run_id`` that hold results or chunks, sorted by name."""
        folder = self._prefix + check_key_component("run id", run_id) + "/"
        steps = set()
        for key in self._keys(folder):
            step, _, name = key[len(folder) :].partition("/")
            if "/" not in name and split_name(name) is not None:
                steps.add(step)
        return sorted(steps)

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result of ``run_id`` (DeleteObjects, 1,000 at a time); returns how many."""
        folder = self._prefix + check_key_component("run id", run_id) + "/"
        keys = list(self._keys(folder))
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with self._translated():
                response = self._client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreUnavailable(
                    f"S3 could not delete {len(errors)} result(s) of run {run_id!r}, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} ({self._where}); clear it again"
                )
        return sum(1 for key in keys if split_name(key) is not None)

    def mark_run_finished(self, *, run_id: str, finished_at: float) -> int:
        """Tag the run's objects ``relay-retention=finished``, restarting their age now.

        The bucket's lifecycle rule for that tag (``terraform/modules/aws/s3.tf``) expires
        an object its retention after its last write, so each object is copied onto
        itself (the copy is the new write, made when the run ended) with the tag and a
        ``relay-finished-at`` metadata entry; an object that already carries that entry is
        left alone, so a redelivered message costs a HeadObject per object only.
        """
        folder = self._prefix + check_key_component("run id", run_id) + "/"
        stamp = str(int(finished_at))
        count = 0
        for key in self._keys(folder):
            head = self._head(key)
            if head is None:  # deleted since the listing
                continue
            count += 1
            metadata = dict(head.get("Metadata", {}))
            if metadata.get(_FINISHED_AT) == stamp:
                continue
            metadata[_FINISHED_AT] = stamp
            with self._translated():
                self._client.copy_object(
                    Bucket=self._bucket,
                    Key=key,
                    CopySource={"Bucket": self._bucket, "Key": key},
                    MetadataDirective="REPLACE",
                    Metadata=metadata,
                    ContentType=head.get("ContentType", "application/octet-stream"),
                    TaggingDirective="REPLACE",
                    Tagging=RETENTION_TAG,
                )
        return count

    def _put(
        self, stem: str, value: Any, serializer: Serializer | None, *, is_ordered: bool = False
    ) -> str:
        chosen, data = encode_value(value, serializer, stem[len(self._prefix) :])
        target = stem + SUFFIXES[chosen]
        metadata: dict[str, str] = {}
        if is_ordered:
            metadata[_SAVED_AT] = str(self._saved_at(target) or self._now_ns())
        with self._translated():
            # Delete the other formats first: a crash in between leaves no result (the
            # retried step saves it again), never a stale one that load() prefers.
            others = [stem + suffix for fmt, suffix in SUFFIXES.items() if fmt != chosen]
            deleted = self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": key} for key in others], "Quiet": True},
            )
            if deleted.get("Errors"):
                first = deleted["Errors"][0]
                raise StoreUnavailable(
                    f"S3 could not delete {first.get('Key')} before saving {target}: "
                    f"{first.get('Code')} ({self._where}); the step's retry saves it again"
                )
            self._client.put_object(
                Bucket=self._bucket,
                Key=target,
                Body=data,
                ContentType=CONTENT_TYPES[chosen],
                Metadata=metadata,
            )
        return f"s3://{self._bucket}/{target}"

    def _get(self, stem: str) -> Any:
        for serializer, suffix in SUFFIXES.items():
            try:
                response = self._client.get_object(Bucket=self._bucket, Key=stem + suffix)
                with contextlib.closing(response["Body"]) as body:
                    data = body.read()
            except Exception as exc:
                if error_code(exc) in _MISSING_CODES:
                    continue
                error = self._error(exc)
                if error is None:
                    raise
                raise error from exc
            return decode_value(data, serializer, stem + suffix)
        raise KeyError(f"no result {stem[len(self._prefix) :]!r}")

    # -- internals ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return where(self.describe(), "bucket")

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return translated(service="S3", where=self._where, unavailable=StoreUnavailable)

    def _error(self, exc: Exception) -> Exception | None:
        return engine_error(exc, service="S3", where=self._where, unavailable=StoreUnavailable)

    def _step_folder(self, run_id: str, step: str) -> str:
        run = check_key_component("run id", run_id)
        return f"{self._prefix}{run}/{check_key_component('step', step)}/"

    def _stem(self, run_id: str, step: str, result_id: str) -> str:
        stem = (
            f"{self._prefix}{check_key_component('run id', run_id)}/"
            f"{check_key_component('step', step)}/{check_key_component('result id', result_id)}"
        )
        if len((stem + ".json").encode()) > _MAX_KEY_BYTES:
            raise ValueError(
                f"result {run_id}/{step}/{result_id} cannot be used as a storage key: S3 keys "
                f"are at most {_MAX_KEY_BYTES} bytes"
            )
        return stem

    def _now_ns(self) -> int:
        """Wall-clock nanoseconds, strictly increasing within this process."""
        with self._lock:
            self._last_saved_ns = max(time.time_ns(), self._last_saved_ns + 1)
            return self._last_saved_ns

    def _head(self, key: str) -> HeadObjectOutputTypeDef | None:
        """HeadObject of ``key``; None when the object does not exist."""
        try:
            return self._client.head_object(Bucket=self._bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in _MISSING_CODES:
                return None
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc

    def _saved_at(self, key: str) -> int | None:
        """The first-save time recorded on ``key``; None when the object does not exist."""
        head = self._head(key)
        if head is None:
            return None
        value = head.get("Metadata", {}).get(_SAVED_AT, "")
        return int(value) if value.isdigit() else 0

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            with self._translated():
                if token is None:
                    page = self._client.list_objects_v2(Bucket=self._bucket, Prefix=prefix)
                else:
                    page = self._client.list_objects_v2(
                        Bucket=self._bucket, Prefix=prefix, ContinuationToken=token
                    )
            keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return keys
