"""Step outputs too large to keep inline, as Cloud Storage objects.

Layout in the bucket: ``<prefix><run_id>/<step>/<result_id>.json`` (``.parquet`` for Arrow
tables, ``.pkl`` only when the caller asked for pickle), plus one empty *order marker* per
result saved with ``save`` (chunks, ``chunk-NNNNNNNNNN``, order by name),
``<prefix><run_id>/<step>/_order/<sequence>-<result_id>``, written before the result's
first save: listing the markers, which sort by sequence, gives the save order. Markers
rather than custom object metadata, because metadata cannot be read without one request
per object on every emulator, and rather than an index object, which concurrent saves
would have to read-modify-write.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

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
from infra.gcp._errors import google_errors

if TYPE_CHECKING:
    from google.cloud.storage import Client  # type: ignore[import-untyped]

_ORDER_DIR: Final = "_order/"
_CHUNK_NAME_PREFIX: Final = "chunk-"


class _Sequence:
    """Increasing numbers for order markers: nanoseconds, never repeating in a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            return self._last


class GcsIOManager:
    """An ``IOManager`` keeping each result in its own Cloud Storage object.

    An object upload is atomic (readers see the old object or the new one, never a
    part), and it completes before the step commit that references it.

    Args:
        client: A ``google.cloud.storage.Client`` (created while ``STORAGE_EMULATOR_HOST``
            is set to talk to the emulator).
        bucket: The bucket results live in; it must exist.
        prefix: Prepended to every object name (``"relay/"`` keeps results in a folder).
        timeout_seconds: Budget of one request, retries of transient errors included;
            past it the call raises ``StoreUnavailable``.
    """

    def __init__(
        self,
        client: Client,
        *,
        bucket: str,
        prefix: str = "",
        timeout_seconds: float = 30.0,
    ) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

        self._client = client
        self._bucket = client.bucket(bucket)
        self._prefix = prefix
        self._timeout = timeout_seconds
        # Every request here is idempotent (uploads overwrite with the same bytes), so the
        # library's retry of transient errors applies to all of them, within the budget.
        self._retry = DEFAULT_RETRY.with_timeout(timeout_seconds)
        self._sequence = _Sequence()

    @classmethod
    def from_settings(
        cls, *, bucket: str, prefix: str = "", project: str | None = None
    ) -> GcsIOManager:
        """A manager on ``bucket`` with Application Default Credentials.

        ``STORAGE_EMULATOR_HOST``, when set, points the client at an emulator.
        """
        from google.cloud.storage import Client

        return cls(Client(project=project), bucket=bucket, prefix=prefix)

    def describe(self) -> Mapping[str, str]:
        """Bucket, prefix, project and endpoint, for logs and errors."""
        return {
            "backend": "gcs",
            "bucket": str(self._bucket.name),
            "prefix": self._prefix,
            "project": str(self._client.project),
            "endpoint": str(self._client.api_endpoint),
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
        """Store ``value``, replacing any earlier result with this key.

        One listing (does the result exist, in any format?), one upload of the order
        marker on the first save, one upload of the result, and one delete when the
        format changed.

        Returns:
            The ``gs://bucket/name`` URL of the object.

        Raises:
            TypeError: the chosen format cannot hold ``value``.
            ValueError: an id is not a safe object-name component.
            MissingExtraError: Parquet without pyarrow installed.
            ConfigurationError: the bucket does not exist or access is denied.
            StoreUnavailable: Cloud Storage stayed unreachable for the whole timeout.
        """
        step_dir = self._step_dir(run_id, step)
        return self._put(step_dir, check_result_id(result_id), value, serializer, is_ordered=True)

    def save_chunk(
        self,
        *,
        run_id: str,
        step: str,
        index: int,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store chunk ``index``, replacing an earlier save (no order marker: names sort)."""
        step_dir = self._step_dir(run_id, step)
        return self._put(step_dir, chunk_result_id(index), value, serializer, is_ordered=False)

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        return self._get(self._step_dir(run_id, step), check_result_id(result_id))

    def load_chunk(self, *, run_id: str, step: str, index: int) -> Any:
        """Return chunk ``index``; raises ``KeyError`` when it was never saved."""
        return self._get(self._step_dir(run_id, step), chunk_result_id(index))

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The ids saved with ``save`` for one step of one run, in first-save order."""
        step_dir = self._step_dir(run_id, step)
        markers: list[str] = []
        present: set[str] = set()
        for relative in self._names(step_dir):
            if relative.startswith(_ORDER_DIR):
                markers.append(relative[len(_ORDER_DIR) :])
            elif (
                "/" not in relative
                and (parts := split_name(relative)) is not None
                and chunk_index(parts[0]) is None
            ):
                present.add(parts[0])
        # Markers sort by their zero-padded sequence; dict.fromkeys keeps the first of
        # two racing first saves. Results without a marker (none are written so) go last.
        ordered = [marker.split("-", 1)[1] for marker in sorted(markers)]
        listed = [result_id for result_id in dict.fromkeys(ordered) if result_id in present]
        return listed + sorted(present.difference(listed))

    def list_chunks(self, *, run_id: str, step: str) -> list[int]:
        """The chunk indexes stored for one step of one run, ascending (one listing)."""
        step_dir = self._step_dir(run_id, step)
        indexes = {
            chunk_index(parts[0])
            for relative in self._names(step_dir + _CHUNK_NAME_PREFIX, strip=step_dir)
            if "/" not in relative and (parts := split_name(relative)) is not None
        }
        return sorted(i for i in indexes if i is not None)

    def list_steps(self, *, run_id: str) -> list[str]:
        """The steps of ``run_id`` that hold results or chunks, sorted by name."""
        run_dir = self._prefix + check_key_component("run id", run_id) + "/"
        steps = {
            relative.split("/", 1)[0]
            for relative in self._names(run_dir)
            if relative.count("/") == 1 and split_name(relative.split("/", 1)[1]) is not None
        }
        return sorted(steps)

    def clear_run(self, *, run_id: str) -> int:
        """Delete every object of ``run_id``; returns the number of results deleted."""
        run_dir = self._prefix + check_key_component("run id", run_id) + "/"
        count = 0
        names = self._names(run_dir)
        with google_errors(f"clear run {run_id!r}", self.describe()):
            for relative in names:
                if relative.count("/") == 1 and split_name(relative.split("/", 1)[1]):
                    count += 1
                self._delete(run_dir + relative)
        return count

    def mark_run_finished(self, *, run_id: str, finished_at: float) -> int:
        """Set every object's ``customTime`` to ``finished_at``, rewriting it as it is.

        The bucket's lifecycle rule (``terraform/modules/gcp/storage.tf``) deletes an
        object ``days_since_custom_time`` after its custom time, so objects of runs still
        in flight (no custom time) are kept. Each object is uploaded again with the same
        bytes and content type plus the custom time (one download and one upload per
        object; the storage emulator serves no metadata PATCH). An object whose custom
        time is already this late is left alone (Cloud Storage never moves one earlier);
        a run retried by hand and ended again moves it later.
        """
        from google.api_core.exceptions import NotFound

        run_dir = self._prefix + check_key_component("run id", run_id) + "/"
        when = datetime.fromtimestamp(finished_at, UTC)
        count = 0
        with google_errors(f"mark run {run_id!r} finished", self.describe()):
            blobs = list(
                self._client.list_blobs(
                    self._bucket, prefix=run_dir, retry=self._retry, timeout=self._timeout
                )
            )
            for blob in blobs:
                relative = str(blob.name)[len(run_dir) :]
                is_result = relative.count("/") == 1 and bool(split_name(relative.split("/", 1)[1]))
                count += 1 if is_result else 0
                if blob.custom_time is not None and blob.custom_time >= when:
                    continue
                try:
                    data = blob.download_as_bytes(retry=self._retry, timeout=self._timeout)
                except NotFound:  # deleted since the listing
                    count -= 1 if is_result else 0
                    continue
                fresh = self._bucket.blob(blob.name)
                fresh.custom_time = when
                fresh.upload_from_string(
                    data,
                    content_type=blob.content_type,
                    retry=self._retry,
                    timeout=self._timeout,
                )
        return count

    def _put(
        self,
        step_dir: str,
        result_id: str,
        value: Any,
        serializer: Serializer | None,
        *,
        is_ordered: bool,
    ) -> str:
        chosen, data = encode_value(value, serializer, step_dir[len(self._prefix) :] + result_id)
        name = step_dir + result_id + SUFFIXES[chosen]
        with google_errors(f"save result {name!r}", self.describe()):
            # The result in any format; the prefix also lists ids that merely start so.
            existing = {
                str(blob.name)
                for blob in self._client.list_blobs(
                    self._bucket,
                    prefix=step_dir + result_id + ".",
                    retry=self._retry,
                    timeout=self._timeout,
                )
                if (split_name(str(blob.name)[len(step_dir) :]) or ("",))[0] == result_id
            }
            if is_ordered and not existing:
                # Mark the order before the result exists: a crash in between leaves a
                # marker that list_results skips, never a result missing from the order.
                marker = f"{step_dir}{_ORDER_DIR}{self._sequence.next():020d}-{result_id}"
                self._bucket.blob(marker).upload_from_string(
                    b"", retry=self._retry, timeout=self._timeout
                )
            self._bucket.blob(name).upload_from_string(
                data,
                content_type=CONTENT_TYPES[chosen],
                retry=self._retry,
                timeout=self._timeout,
            )
            for other in existing - {name}:
                self._delete(other)
        return f"gs://{self._bucket.name}/{name}"

    def _get(self, step_dir: str, result_id: str) -> Any:
        from google.api_core.exceptions import NotFound

        for serializer, suffix in SUFFIXES.items():
            name = step_dir + result_id + suffix
            with google_errors(f"load result {name!r}", self.describe()):
                try:
                    data = self._bucket.blob(name).download_as_bytes(
                        retry=self._retry, timeout=self._timeout
                    )
                except NotFound:
                    continue
            return decode_value(data, serializer, name)
        raise KeyError(f"no result {result_id!r} under {step_dir!r}")

    def _names(self, prefix: str, *, strip: str | None = None) -> list[str]:
        """Names of the objects under ``prefix``, relative to ``strip`` (default: prefix)."""
        cut = len(prefix if strip is None else strip)
        with google_errors(f"list objects under {prefix!r}", self.describe()):
            return [
                str(blob.name)[cut:]
                for blob in self._client.list_blobs(
                    self._bucket, prefix=prefix, retry=self._retry, timeout=self._timeout
                )
            ]

    def _step_dir(self, run_id: str, step: str) -> str:
        run = check_key_component("run id", run_id)
        return f"{self._prefix}{run}/{check_key_component('step', step)}/"

    def _delete(self, name: str) -> None:
        """Delete one object; one that is already gone (a concurrent clear) is fine."""
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self._bucket.delete_blob(name, retry=self._retry, timeout=self._timeout)
