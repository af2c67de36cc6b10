"""What a saga is made of: step definitions, compensations, waits, and step handles.

``Saga`` (``core/domain/saga.py``) declares these; the engine reads them. A step that
waits (a durable sleep or a wait for an event) is a ``StepDefinition`` with a
``WaitSpec`` and no code of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, overload

from typing_extensions import TypeVar

from core.domain.context import StepContext
from core.domain.records import RunSnapshot
from core.domain.retry_policy import DEFAULT_COMPENSATION_RETRY, DEFAULT_STEP_RETRY, RetryPolicy
from core.errors import DefinitionError

InputT = TypeVar("InputT", default=Any)
"""A saga's input type: its input model, or ``JSONValue`` for a saga without one."""
OutputT = TypeVar("OutputT", default=Any)
"""What a step function returns (JSON, a pydantic model or a ``Result``)."""
R = TypeVar("R")

UserStep = Callable[[StepContext[InputT]], OutputT]
"""A step or compensation function as a user writes it, for a saga of input ``InputT``."""

StepFunction = Callable[[StepContext[Any]], Any]
"""A step or compensation as the engine calls it: sync or async, returns JSON, a pydantic
model or a Result."""

Invariant = Callable[[RunSnapshot], Iterable[str]]
"""Checks one finished run and yields what is wrong with it (``relay chaos``)."""

EventCorrelation = Callable[[Mapping[str, Any]], str | None]
"""Maps an event ``{"topic", "data", "id"}`` to the correlation id of the run it resumes."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
MAX_TIMEOUT_SECONDS = 1800.0  # Cloud Tasks' longest dispatch deadline (30 min).
MAX_WAIT_SECONDS = 30 * 86400.0
"""Longest sleep or event wait: Cloud Tasks refuses a task scheduled over 30 days ahead."""
DEFAULT_EVENT_TIMEOUT_SECONDS = 7 * 86400.0


def check_name(kind: str, name: str) -> None:
    """Refuse a saga or step name that cannot be part of message ids, task names and paths.

    Raises:
        DefinitionError: naming the rule the name breaks.
    """
    if not _NAME.match(name):
        raise DefinitionError(
            f"{kind} name {name!r} is invalid: use letters, digits, '_' or '-', "
            "start with a letter or '_', at most 63 characters"
        )


def check_wait_seconds(saga: str, step: str, field_name: str, seconds: float) -> None:
    """Refuse a sleep or event timeout outside (0, 30 days].

    Raises:
        DefinitionError: naming the step, the field and the limit.
    """
    if not 0 < seconds <= MAX_WAIT_SECONDS:
        raise DefinitionError(
            f"{field_name} of step {step!r} of saga {saga!r} must be in (0, {MAX_WAIT_SECONDS:g}] "
            f"(30 days, Cloud Tasks' scheduling limit), got {seconds}; chain steps for longer"
        )


@dataclass(frozen=True, slots=True)
class CompensationDefinition:
    """How a step is undone."""

    fn: StepFunction
    retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout_seconds: float | None = None


def correlation_id_field(event: Mapping[str, Any]) -> str | None:
    """The default correlation: ``data["correlation_id"]`` of the event, when a string."""
    data = event.get("data")
    value = data.get("correlation_id") if isinstance(data, Mapping) else None
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """What a step that runs no code waits for: a duration, or an event with a deadline.

    Exactly one of ``sleep_seconds`` and ``topic`` is set. An event step fails (and the
    run compensates) when no matching event arrives within ``timeout_seconds``.
    """

    sleep_seconds: float | None = None
    topic: str | None = None
    correlation: EventCorrelation = correlation_id_field
    timeout_seconds: float = DEFAULT_EVENT_TIMEOUT_SECONDS

    @property
    def is_sleep(self) -> bool:
        """True for a durable sleep, False for a wait for an event."""
        return self.sleep_seconds is not None

    def deadline(self, started_at: float) -> float:
        """When the wait ends: the wake-up time, or the moment the event wait times out."""
        if self.sleep_seconds is not None:
            return started_at + self.sleep_seconds
        return started_at + self.timeout_seconds


def runs_no_code(ctx: StepContext[Any]) -> None:
    """The function of a waiting step: the engine never calls it.

    Raises:
        DefinitionError: always; reaching it means the engine treated a wait as code.
    """
    raise DefinitionError(f"step {ctx.step!r} waits; the engine never calls its function")


@dataclass(frozen=True, slots=True)
class StepDefinition:
    """One step of a saga.

    ``compensate_on_failure`` runs the compensation for this step even when the step
    itself failed: a timed-out call to a payment provider may still have charged, and an
    idempotent compensation keyed by the idempotency key is then the only safe undo.

    ``fail_safe`` (set for pipeline tasks declared ``@task(fail_safe=True)``) lets the run
    go on when the step fails for good: the step stays FAILED, nothing is compensated, and
    the steps after it run as if it had finished, seeing no output of it.
    """

    name: str
    fn: StepFunction
    after: tuple[str, ...]
    index: int
    retry: RetryPolicy = DEFAULT_STEP_RETRY
    timeout_seconds: float = 30.0
    compensation: CompensationDefinition | None = None
    compensate_on_failure: bool = True
    wait: WaitSpec | None = None
    fail_safe: bool = False

    @property
    def compensation_timeout_seconds(self) -> float:
        """Timeout for the compensation: its own, or the step's."""
        if self.compensation and self.compensation.timeout_seconds is not None:
            return self.compensation.timeout_seconds
        return self.timeout_seconds


class StepHandle(Generic[InputT, OutputT]):
    """What ``@saga.step`` returns: the original function plus ``.compensation``.

    Calling the handle calls the step function with its own types
    (``StepHandle[OrderInput, dict[str, str]]``), so step code stays unit-testable.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[StepContext[InputT]], OutputT],
        *,
        attach: Callable[[str, CompensationDefinition], None],
    ) -> None:
        self._attach = attach
        self.name = name
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = name

    def __call__(self, ctx: StepContext[InputT]) -> OutputT:
        """Call the step function directly (unit tests of step code)."""
        return self.fn(ctx)

    @overload
    def compensation(self, fn: UserStep[InputT, R], /) -> UserStep[InputT, R]: ...

    @overload
    def compensation(
        self,
        fn: None = None,
        /,
        *,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
    ) -> Callable[[UserStep[InputT, R]], UserStep[InputT, R]]: ...

    def compensation(
        self,
        fn: UserStep[InputT, R] | None = None,
        /,
        *,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
    ) -> UserStep[InputT, R] | Callable[[UserStep[InputT, R]], UserStep[InputT, R]]:
        """Declare the function that undoes this step (decorator, with or without args).

        The compensation takes the step's context type and returns the function unchanged.
        """

        def register(func: UserStep[InputT, R]) -> UserStep[InputT, R]:
            self._attach(
                self.name,
                CompensationDefinition(
                    fn=func,
                    retry=retry or DEFAULT_COMPENSATION_RETRY,
                    timeout_seconds=timeout_seconds,
                ),
            )
            return func

        return register(fn) if fn is not None else register
