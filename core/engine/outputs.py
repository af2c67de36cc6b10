"""Run inputs and step outputs: inline when small, through the I/O manager when large.

A stored reference is ``{"$ref": <url>, "bytes": <size>}`` (plus ``"sha256"`` for an
input). A value that merely looks like one (user data with exactly those keys) is
offloaded whatever its size, so a record holding that shape is always a real reference.

A streaming step's output is its chunks, stored one by one through the I/O manager as the
step produces them (``{run}/{step}/chunk-NNNNNNNNNN``); its record keeps only
``{"$chunks": <count>}``, so the record does not grow with the stream, and a reader loads
chunks ``0..count-1`` in order. Which chunks are committed is what ``list_chunks`` shows
(``save_chunk`` is an idempotent replace): an attempt lists them once, at its start, and
no state-store write is paid per chunk (see :class:`StepChunks`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from core.domain.records import JSON, RunRecord, RunSnapshot, StepName, StepRecord
from core.domain.status import StepStatus
from core.errors import ConfigurationError, InputTooLargeError, NonRetryableStepError
from core.ports.io_manager import IOManager

REF_KEY: Final = "$ref"
OUTPUT_RESULT_ID: Final = "output"
RUN_OUTPUT_STEP: Final = "$output"
"""Where a run's offloaded output lives: ``{run}/$output/output`` (``$``: no step's name)."""
INPUT_STEP: Final = "$input"
"""Where a run's offloaded input lives in the I/O manager: ``{run}/$input/input-<sha256>``.
``$`` is not allowed in step names, so no step's results can collide with it."""
DEFAULT_MAX_INPUT_BYTES: Final = 10 * 1024 * 1024
_REFERENCE_KEYS: Final = (frozenset({REF_KEY, "bytes"}), frozenset({REF_KEY, "bytes", "sha256"}))
CHUNKS_KEY: Final = "$chunks"
"""The one key of a streaming step's stored output: ``{"$chunks": <count>}``."""


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


def is_reference(stored: object) -> bool:
    """Whether a stored value is a reference to the I/O manager (see the module docstring)."""
    return (
        isinstance(stored, dict)
        and frozenset(stored) in _REFERENCE_KEYS
        and isinstance(stored[REF_KEY], str)
    )


def is_stream_reference(stored: object) -> bool:
    """Whether a stored value is a streaming step's output, ``{"$chunks": <count>}``."""
    return (
        isinstance(stored, dict)
        and len(stored) == 1
        and isinstance(stored.get(CHUNKS_KEY), int)
        and not isinstance(stored[CHUNKS_KEY], bool)
    )


def stream_reference(count: int) -> dict[str, int]:
    """The stored output of a streaming step that committed ``count`` chunks."""
    return {CHUNKS_KEY: count}


class StepChunks:
    """The chunks of one streaming step of one run, in the I/O manager (a ``ChunkStream``).

    ``committed`` lists the step's chunks (one listing per attempt) and counts the
    gap-free prefix from index 0: chunks are saved in order, so a gap only follows a
    crash between two saves, and the chunk at the gap is the next one to produce.
    """

    def __init__(self, io: IOManager, *, run_id: str, step: str) -> None:
        self._io = io
        self._run_id = run_id
        self._step = step

    def committed(self) -> int:
        """How many chunks are stored, from index 0 up to the first gap."""
        count = 0
        for index in self._io.list_chunks(run_id=self._run_id, step=self._step):
            if index != count:
                break
            count += 1
        return count

    def commit(self, index: int, value: Any) -> None:
        """Store chunk ``index`` (JSON), replacing an earlier save of it."""
        self._io.save_chunk(
            run_id=self._run_id, step=self._step, index=index, value=value, serializer="json"
        )


@dataclass(frozen=True, slots=True)
class PreparedInput:
    """A run input checked for size before anything is written: its encoding and digest."""

    value: JSON
    size_bytes: int
    sha256: str
    is_offloaded: bool

    @property
    def result_id(self) -> str:
        """The input's result id: content-addressed, so another input never overwrites it."""
        return f"input-{self.sha256[:32]}"


class OutputStorage:
    """Decides where an input or output lives and reads it back."""

    def __init__(
        self,
        *,
        io_manager: IOManager | None,
        inline_limit_bytes: int,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
    ) -> None:
        self._io = io_manager
        self._limit = inline_limit_bytes
        self._max_input = max_input_bytes

    def store(self, *, run_id: str, step: str, value: Any) -> Any:
        """The value to put in the step record: the output itself or a reference to it."""
        encoded = json.dumps(value, separators=(",", ":"))
        looks_stored = is_reference(value) or is_stream_reference(value)
        if len(encoded) <= self._limit and not (looks_stored and self._io is not None):
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
        if is_reference(stored) and self._io is not None:
            return self._io.load(run_id=run_id, step=step, result_id=OUTPUT_RESULT_ID)
        if is_stream_reference(stored) and self._io is not None:
            io, count = self._io, int(stored[CHUNKS_KEY])
            return [io.load_chunk(run_id=run_id, step=step, index=i) for i in range(count)]
        return stored

    def chunks_of(self, *, run_id: str, step: str) -> StepChunks | None:
        """Where a streaming step of ``run_id`` commits its chunks (None: no I/O manager)."""
        if self._io is None:
            return None
        return StepChunks(self._io, run_id=run_id, step=step)

    def store_run_output(self, *, run_id: str, value: Any) -> Any:
        """The value to put in the run header: the run's output or a reference to it.

        A default run output gathers every step's stored output, and a custom one is
        whatever the saga builds; either can outgrow a record that its parts fit in.
        Without an I/O manager it stays inline (a store that cannot hold it refuses the
        commit, and the engine fails the step rather than loop).
        """
        if self._io is None:
            return value
        return self.store(run_id=run_id, step=RUN_OUTPUT_STEP, value=value)

    def resolve_run_output(self, run: RunRecord) -> Any:
        """The run's real output (loads an offloaded one)."""
        return self.resolve(run_id=run.run_id, step=RUN_OUTPUT_STEP, stored=run.output)

    def prepare_input(self, *, saga: str, value: JSON) -> PreparedInput:
        """Measure a validated run input and decide where it goes; writes nothing.

        Raises:
            InputTooLargeError: the input is over the largest input a run keeps.
        """
        encoded = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        data = encoded.encode()
        size = len(data)
        if size > self._max_input:
            raise InputTooLargeError(
                saga=saga,
                size_bytes=size,
                limit_bytes=self._max_input,
                reason="over the largest input a run keeps",
            )
        # Without an I/O manager the input stays inline, and a store that cannot hold it
        # refuses the run's creation (RequestRejected, a 422; nothing is written).
        is_offloaded = self._io is not None and (size > self._limit or is_reference(value))
        return PreparedInput(value, size, hashlib.sha256(data).hexdigest(), is_offloaded)

    def store_input(self, *, run_id: str, prepared: PreparedInput) -> JSON:
        """What the run record keeps: the input itself, or a reference after saving it."""
        if not prepared.is_offloaded or self._io is None:  # (the second never, by prepare)
            return prepared.value
        ref = self._io.save(
            run_id=run_id, step=INPUT_STEP, result_id=prepared.result_id, value=prepared.value
        )
        return {REF_KEY: ref, "bytes": prepared.size_bytes, "sha256": prepared.sha256}

    def resolve_input(self, run: RunRecord) -> JSON:
        """The run's real input (loads an offloaded one)."""
        stored = run.input
        if not (is_reference(stored) and isinstance(stored, dict) and "sha256" in stored):
            return stored
        if self._io is None:
            raise ConfigurationError(
                f"the input of run {run.run_id} is stored through the I/O manager "
                f"({stored[REF_KEY]}), and none is configured"
            )
        result_id = f"input-{str(stored['sha256'])[:32]}"
        loaded: JSON = self._io.load(run_id=run.run_id, step=INPUT_STEP, result_id=result_id)
        return loaded

    @staticmethod
    def is_same_input(stored: JSON, prepared: PreparedInput) -> bool:
        """Whether a stored input (inline or a reference) is the prepared one."""
        if is_reference(stored) and isinstance(stored, dict) and "sha256" in stored:
            return bool(stored["sha256"] == prepared.sha256)
        return bool(stored == prepared.value)

    def on_run_ended(
        self, run: RunRecord, steps: Iterable[StepRecord], *, streaming: Collection[str] = ()
    ) -> None:
        """Start the retention of a terminal run's offloaded data (outputs, input).

        The state store stamps the run record to expire ``updated_at`` plus its retention;
        the I/O manager's ``mark_run_finished`` makes the bucket delete the run's objects
        the same retention after the same time (docs/adr/0008). Only runs that offloaded
        something pay for it (a listing and a rewrite per object); a step in ``streaming``
        (the saga's streaming steps) that was attempted may have committed chunks even if
        it failed, so it counts too. Idempotent: a
        redelivered message of an ended run calls it again, which heals a crash between
        the final commit and this call.

        Raises:
            StoreUnavailable: the bucket failed; the caller lets the message be redelivered.
        """
        if self._io is None or not run.status.is_terminal:
            return
        if (
            is_reference(run.input)
            or is_reference(run.output)
            or any(
                is_reference(step.output)
                or is_stream_reference(step.output)
                or (step.name in streaming and step.execute_attempts > 0)
                for step in steps
            )
        ):
            self._io.mark_run_finished(run_id=run.run_id, finished_at=run.updated_at)

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
