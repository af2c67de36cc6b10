"""An in-process ``IOManager`` for fast engine unit tests.

Values are kept serialised, exactly as a file or object store would hold them, so a
value JSON cannot represent fails here as it does in production, and a loaded value is
a fresh copy.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from core.ports.io_codec import check_key, decode_value, encode_value
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
        serializer: Serializer = "json",
    ) -> str:
        """Store ``value``, replacing any earlier result with this key.

        Returns:
            A ``memory://`` reference naming the result.

        Raises:
            TypeError: ``value`` is not JSON-serialisable and pickle was not asked for.
            ValueError: an id is not a safe path component.
        """
        check_key(run_id, step, result_id)
        data = encode_value(value, serializer, f"{run_id}/{step}/{result_id}")
        with self._lock:
            self._runs.setdefault(run_id, {}).setdefault(step, {})[result_id] = (serializer, data)
        return f"memory://{run_id}/{step}/{result_id}"

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        check_key(run_id, step, result_id)
        with self._lock:
            stored = self._runs.get(run_id, {}).get(step, {}).get(result_id)
        if stored is None:
            raise KeyError(f"no result {result_id!r} for step {step!r} of run {run_id!r}")
        serializer, data = stored
        return decode_value(data, serializer)

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The result ids stored for one step of one run, in first-save order."""
        check_key(run_id, step)
        with self._lock:
            return list(self._runs.get(run_id, {}).get(step, {}))

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result of ``run_id``; returns the number deleted."""
        check_key(run_id)
        with self._lock:
            steps = self._runs.pop(run_id, {})
        return sum(len(results) for results in steps.values())
