"""Step outputs: inline in the step record when small, through the I/O manager when large."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from core.domain.records import RunSnapshot, StepName
from core.domain.status import StepStatus
from core.errors import ConfigurationError, NonRetryableStepError
from core.ports.io_manager import IOManager

REF_KEY = "$ref"
OUTPUT_RESULT_ID = "output"


def to_json_value(value: Any, *, step: str) -> Any:
    """Normalise what step code returned into a JSON value.

    Raises:
        NonRetryableStepError: the value cannot be represented as JSON; retrying the same
            code would return the same value.
    """
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NonRetryableStepError(
            f"step {step!r} returned a value that is not JSON ({exc}); return dicts, lists, "
            "strings, numbers, booleans, None or a pydantic model"
        ) from exc
    return value


class OutputStorage:
    """Decides where an output lives and reads it back."""

    def __init__(self, *, io_manager: IOManager | None, inline_limit_bytes: int) -> None:
        self._io = io_manager
        self._limit = inline_limit_bytes

    def store(self, *, run_id: str, step: str, value: Any) -> Any:
        """The value to put in the step record: the output itself or a reference to it."""
        encoded = json.dumps(value, separators=(",", ":"))
        if len(encoded) <= self._limit:
            return value
        if self._io is None:
            raise ConfigurationError(
                f"output of step {step!r} is {len(encoded)} bytes, over the inline limit of "
                f"{self._limit}, and no I/O manager is configured"
            )
        ref = self._io.save(run_id=run_id, step=step, result_id=OUTPUT_RESULT_ID, value=value)
        return {REF_KEY: ref, "bytes": len(encoded)}

    def resolve(self, *, run_id: str, step: str, stored: Any) -> Any:
        """The real output for a stored value (loads references)."""
        if isinstance(stored, dict) and REF_KEY in stored and self._io is not None:
            return self._io.load(run_id=run_id, step=step, result_id=OUTPUT_RESULT_ID)
        return stored

    def outputs_of(self, snapshot: RunSnapshot) -> LazyOutputs:
        """A read-only mapping of succeeded steps to outputs, loaded on access."""
        return LazyOutputs(self, snapshot)


class LazyOutputs(Mapping[str, Any]):
    """Outputs of earlier steps; references are loaded only when step code reads them."""

    def __init__(self, storage: OutputStorage, snapshot: RunSnapshot) -> None:
        self._storage = storage
        self._run_id = snapshot.run.run_id
        self._stored = {
            name: record.output
            for name, record in snapshot.steps.items()
            if record.status
            in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING, StepStatus.COMPENSATED)
        }
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            stored = self._stored[StepName(key)]
            self._cache[key] = self._storage.resolve(run_id=self._run_id, step=key, stored=stored)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)
