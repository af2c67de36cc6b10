"""The context a step or compensation function receives for one attempt.

``StepContext`` is generic over the saga's input: a step of ``Saga("order",
input_model=OrderInput)`` is written ``def charge(ctx: StepContext[OrderInput])``, so
``ctx.input.customer_id`` type-checks, and ``@order.step`` refuses a function that
expects another input. A saga without an input model passes JSON
(``StepContext[JSONValue]``). A bare ``StepContext`` means ``StepContext[Any]``: the
engine's own view, which handles steps of every saga.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypeVar

from core.domain.json_types import JSONValue
from core.domain.status import Action
from core.errors import NonRetryableStepError

InputT_co = TypeVar("InputT_co", covariant=True, default=Any)
"""The saga's input type: its input model, or ``JSONValue`` for a saga without one."""

T = TypeVar("T")


class ChunkStream(Protocol):
    """Where a streaming step commits its chunks (the I/O manager, for one run and step).

    A chunk is committed once ``commit`` returns: it is stored under its index and
    replaces any earlier save of that index, so committing the same chunk again is
    harmless. ``committed`` counts the chunks stored from index 0 without a gap; a
    redelivered attempt produces chunk ``committed()`` next.
    """

    def committed(self) -> int:
        """How many chunks are stored, counted from index 0 up to the first gap."""
        ...

    def commit(self, index: int, value: JSONValue) -> None:
        """Store chunk ``index`` (JSON), replacing an earlier save of the same index."""
        ...


@dataclass(frozen=True, slots=True)
class StreamedOutput:
    """What a streaming step returns: its output is its ``count`` committed chunks.

    The step record keeps only the count (``{"$chunks": count}``); readers load the
    chunks from the I/O manager in index order.
    """

    count: int


@dataclass(frozen=True, slots=True)
class StepContext(Generic[InputT_co]):
    """What step code knows about the attempt it runs in.

    ``idempotency_key`` is ``"<run_id>:<step>"``, the same on every attempt and in the
    step's compensation: pass it to external services so a retried charge is not a second
    charge and a refund can find the charge it undoes.
    ``input`` is the saga's validated input (an instance of its input model when it has
    one, JSON otherwise). ``outputs`` maps earlier steps to their outputs (JSON); large
    outputs are fetched from the I/O manager on first access. ``output_of`` reads one of
    them as a given type (a pydantic model, ``dict[str, int]``...).
    In a compensation, ``output`` is this step's own output (None when the step failed)
    and ``error`` says why the run is compensating.
    ``chunks`` is where a streaming step commits its chunks (None without an I/O
    manager, and in compensations).
    ``attempt`` counts this function's own attempts from 1: the step's when it executes,
    the compensation's when it compensates (so a compensation with ``max_attempts=2``
    never sees 3, whatever the step went through before).
    """

    run_id: str
    saga: str
    step: str
    action: Action
    attempt: int
    idempotency_key: str
    input: InputT_co
    outputs: Mapping[str, JSONValue]
    deadline_at: float
    output: JSONValue = None
    error: str | None = None
    chunks: ChunkStream | None = None

    @property
    def is_compensation(self) -> bool:
        """True when this call undoes the step rather than doing it."""
        return self.action is Action.COMPENSATE

    def output_of(self, step: str, type_: type[T]) -> T:
        """The output of the earlier step ``step``, validated as ``type_``.

        ``type_`` is anything pydantic validates: a model, ``dict[str, str]``, ``int``...
        A step that returned a model gets it back as that model here.

        Raises:
            NonRetryableStepError: ``step`` has no output (it is not an earlier step that
                succeeded), or its output is not a ``type_``. Retrying would read the
                same outputs, so the step fails at once and the run compensates.
        """
        if step not in self.outputs:
            raise NonRetryableStepError(
                f"step {self.step!r} reads the output of {step!r}, which has none: name a "
                f"step this one runs after (finished: {', '.join(sorted(self.outputs)) or 'none'})"
            )
        try:
            return _adapter(type_).validate_python(self.outputs[step])
        except ValidationError as exc:
            raise NonRetryableStepError(
                f"output of step {step!r} is not a {getattr(type_, '__name__', type_)}: "
                f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}"
            ) from exc


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}


def _adapter(type_: type[T]) -> TypeAdapter[T]:
    # Building an adapter compiles a validator (~0.1-1 ms): once per type, not per call.
    # Two threads may both build one on first use; either result is the same validator.
    try:
        cached = _ADAPTERS.get(type_)
    except TypeError:  # an unhashable annotation: validate without caching
        return TypeAdapter(type_)
    if cached is None:
        cached = _ADAPTERS[type_] = TypeAdapter(type_)
    return cached
