"""An in-process ``IOManager`` for fast engine unit tests.

Values are kept serialised, exactly as a file or object store would hold them, so a
value JSON cannot represent fails here as it does in production, and a loaded value is
a fresh copy.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from core.ports.io_codec import (
    SUFFIXES,
    check_key,
    check_result_id,
    chunk_index,
    chunk_result_id,
    decode_value,
    encode_value,
)
from core.ports.io_manager import Serializer


class MemoryIOManager:
    """An ``IOManager`` in process memory; nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # run id -> step -> result id -> (serializer, data); dicts keep first-save order.
        self._runs: dict[str, dict[str, dict[str, tuple[Serializer, bytes]]]] = {}

    def describe(self) -> Mapping[str, str]:
        """Names the backend; there is no location to report."""
        return {"backend": "memory"}

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

        Returns:
            A ``memory://`` reference naming the result.

        Raises:
            TypeError: the chosen format cannot hold ``value``.
            ValueError: an id is not a safe path component.
            MissingExtraError: Parquet without pyarrow installed.
        """
        check_key(run_id, step)
        return self._put(run_id, step, check_result_id(result_id), value, serializer)

    def save_chunk(
        self,
        *,
        run_id: str,
        step: str,
        index: int,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store chunk ``index`` of the step's stream, replacing an earlier save of it."""
        check_key(run_id, step)
        return self._put(run_id, step, chunk_result_id(index), value, serializer)

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        check_key(run_id, step)
        return self._get(run_id, step, check_result_id(result_id))

    def load_chunk(self, *, run_id: str, step: str, index: int) -> Any:
        """Return chunk ``index``; raises ``KeyError`` when it was never saved."""
        check_key(run_id, step)
        return self._get(run_id, step, chunk_result_id(index))

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The result ids saved with ``save`` for one step of one run, in first-save order."""
        check_key(run_id, step)
        with self._lock:
            ids = list(self._runs.get(run_id, {}).get(step, {}))
        return [result_id for result_id in ids if chunk_index(result_id) is None]

    def list_chunks(self, *, run_id: str, step: str) -> list[int]:
        """The chunk indexes stored for one step of one run, ascending."""
        check_key(run_id, step)
        with self._lock:
            ids = list(self._runs.get(run_id, {}).get(step, {}))
        return sorted(i for i in map(chunk_index, ids) if i is not None)

    def list_steps(self, *, run_id: str) -> list[str]:
        """The steps of ``run_id`` that hold results or chunks, sorted by name."""
        check_key(run_id)
        with self._lock:
            return sorted(step for step, results in self._runs.get(run_id, {}).items() if results)

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result of ``run_id``; returns the number deleted."""
        check_key(run_id)
        with self._lock:
            steps = self._runs.pop(run_id, {})
        return sum(len(results) for results in steps.values())

    def mark_run_finished(self, *, run_id: str, finished_at: float) -> int:
        """Nothing expires in process memory; returns how many results the run holds."""
        check_key(run_id)
        with self._lock:
            return sum(len(results) for results in self._runs.get(run_id, {}).values())

    def _put(
        self, run_id: str, step: str, result_id: str, value: Any, serializer: Serializer | None
    ) -> str:
        chosen, data = encode_value(value, serializer, f"{run_id}/{step}/{result_id}")
        with self._lock:
            self._runs.setdefault(run_id, {}).setdefault(step, {})[result_id] = (chosen, data)
        return f"memory://{run_id}/{step}/{result_id}{SUFFIXES[chosen]}"

    def _get(self, run_id: str, step: str, result_id: str) -> Any:
        with self._lock:
            stored = self._runs.get(run_id, {}).get(step, {}).get(result_id)
        if stored is None:
            raise KeyError(f"no result {result_id!r} for step {step!r} of run {run_id!r}")
        serializer, data = stored
        return decode_value(data, serializer, f"{run_id}/{step}/{result_id}")
