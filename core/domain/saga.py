"""Saga definitions: named steps with compensations, retries, timeouts and dependencies.

A saga is declared once at import time and is immutable once a run uses it::

    order = Saga("order", input_model=OrderInput)

    @order.step(retry=RetryPolicy(max_attempts=5), timeout_seconds=10)
    def charge_payment(ctx: StepContext) -> dict[str, str]:
        return payments.charge(key=ctx.idempotency_key, amount=ctx.input.total)

    @charge_payment.compensation
    def refund_payment(ctx: StepContext) -> None:
        payments.refund(key=ctx.idempotency_key)

Steps run in declaration order; ``parallel=True`` runs a step beside the previous one
(same dependencies), and ``after=[...]`` names dependencies explicitly. Dependencies must
be declared earlier, so declaration order is always a valid execution order and its
reverse a valid compensation order.

Two kinds of step run no code of their own; they hold the run (status WAITING) without
holding a worker, so a day-long wait costs two queue messages, not a day of compute::

    order.sleep("cool_off", seconds=3600)
    order.wait_for_event(
        "payment_confirmed",
        topic="payments.confirmed",
        correlation=lambda event: event["data"]["order_id"],
        timeout_seconds=86400,
    )

An event resumes the run its correlation id names: the run's idempotency key (the
business key it was started with, such as an order id) or its run id. Deriving the run
from the key, as Durable Functions does with instance ids, needs no index on any backend.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import CodeType
from typing import Any, overload

from pydantic import BaseModel, ValidationError

from core.domain.context import StepContext
from core.domain.queues import QueueSettings
from core.domain.records import RunSnapshot
from core.domain.retry_policy import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_STEP_RETRY,
    RetryPolicy,
)
from core.domain.triggers import EventTrigger, Schedule, validate_pattern
from core.errors import DefinitionError, InputValidationError

StepFunction = Callable[[StepContext], Any]
"""A step or compensation: sync or async, returns JSON, a pydantic model or a Result."""

Invariant = Callable[[RunSnapshot], Iterable[str]]
"""Checks one finished run and yields what is wrong with it (``relay chaos``)."""

EventCorrelation = Callable[[Mapping[str, Any]], str | None]
"""Maps an event ``{"topic", "data", "id"}`` to the correlation id of the run it resumes."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
MAX_TIMEOUT_SECONDS = 1800.0  # Cloud Tasks' longest dispatch deadline (30 min).
MAX_WAIT_SECONDS = 30 * 86400.0
"""Longest sleep or event wait: Cloud Tasks refuses a task scheduled over 30 days ahead."""
DEFAULT_EVENT_TIMEOUT_SECONDS = 7 * 86400.0


def _check_name(kind: str, name: str) -> None:
    # Names end up in message ids, queue task names and file paths.
    if not _NAME.match(name):
        raise DefinitionError(
            f"{kind} name {name!r} is invalid: use letters, digits, '_' or '-', "
            "start with a letter or '_', at most 63 characters"
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


def _runs_no_code(ctx: StepContext) -> Any:
    raise DefinitionError(f"step {ctx.step!r} waits; the engine never calls its function")


@dataclass(frozen=True, slots=True)
class StepDefinition:
    """One step of a saga.

    ``compensate_on_failure`` runs the compensation for this step even when the step
    itself failed: a timed-out call to a payment provider may still have charged, and an
    idempotent compensation keyed by the idempotency key is then the only safe undo.
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

    @property
    def compensation_timeout_seconds(self) -> float:
        """Timeout for the compensation: its own, or the step's."""
        if self.compensation and self.compensation.timeout_seconds is not None:
            return self.compensation.timeout_seconds
        return self.timeout_seconds


class StepHandle:
    """What ``@saga.step`` returns: the original function plus ``.compensation``.

    Calling the handle calls the step function, so step code stays unit-testable.
    """

    def __init__(self, saga: Saga, name: str, fn: StepFunction) -> None:
        self._saga = saga
        self.name = name
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = name

    def __call__(self, ctx: StepContext) -> Any:
        """Call the step function directly (unit tests of step code)."""
        return self.fn(ctx)

    @overload
    def compensation(self, fn: StepFunction, /) -> StepFunction: ...

    @overload
    def compensation(
        self,
        fn: None = None,
        /,
        *,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
    ) -> Callable[[StepFunction], StepFunction]: ...

    def compensation(
        self,
        fn: StepFunction | None = None,
        /,
        *,
        retry: RetryPolicy | None = None,
        timeout_seconds: float | None = None,
    ) -> StepFunction | Callable[[StepFunction], StepFunction]:
        """Declare the function that undoes this step (decorator, with or without args)."""

        def register(func: StepFunction) -> StepFunction:
            self._saga.set_compensation(
                self.name,
                CompensationDefinition(
                    fn=func,
                    retry=retry or DEFAULT_COMPENSATION_RETRY,
                    timeout_seconds=timeout_seconds,
                ),
            )
            return func

        return register(fn) if fn is not None else register


@dataclass
class Saga:
    """A named, ordered set of steps with compensations.

    Args:
        name: Stable name used in URLs (``/v1/sagas/{name}/runs``) and stored with runs.
        input_model: Pydantic model validating the run input; JSON passes through when None.
        description: One line shown by ``relay manifest`` and the CLI.
        output: Builds the run's output from step outputs; defaults to all step outputs.
        queue: Name of the queue that carries this saga's messages.
        queue_settings: Rate and redelivery settings of that queue (``relay manifest``
            publishes them for Terraform); sagas sharing a queue must not disagree.
    """

    name: str
    input_model: type[BaseModel] | None = None
    description: str = ""
    output: Callable[[Mapping[str, Any]], Any] | None = None
    queue: str = "relay-steps"
    queue_settings: QueueSettings | None = None
    _steps: dict[str, StepDefinition] = field(default_factory=dict, repr=False)
    _invariants: list[Invariant] = field(default_factory=list, repr=False)
    _events: list[EventTrigger] = field(default_factory=list, repr=False)
    _schedules: list[Schedule] = field(default_factory=list, repr=False)
    _is_frozen: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        _check_name("saga", self.name)

    # -- declaration -----------------------------------------------------------------

    @overload
    def step(
        self,
        fn: StepFunction,
        /,
        *,
        name: str | None = None,
        after: Sequence[str] | None = None,
        parallel: bool = False,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 30.0,
        compensate_on_failure: bool = True,
    ) -> StepHandle: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        after: Sequence[str] | None = None,
        parallel: bool = False,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 30.0,
        compensate_on_failure: bool = True,
    ) -> Callable[[StepFunction], StepHandle]: ...

    def step(
        self,
        fn: StepFunction | None = None,
        /,
        *,
        name: str | None = None,
        after: Sequence[str] | None = None,
        parallel: bool = False,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 30.0,
        compensate_on_failure: bool = True,
    ) -> StepHandle | Callable[[StepFunction], StepHandle]:
        """Declare a step (decorator, with or without arguments).

        Args:
            fn: The step function, when used as a bare decorator.
            name: Step name; defaults to the function's name.
            after: Steps that must succeed first; defaults to the previous step.
            parallel: Run beside the previous step (take its dependencies).
            retry: Retry policy for the step's action.
            timeout_seconds: Longest one attempt may run (at most 1800).
            compensate_on_failure: Also compensate this step when it failed.

        Raises:
            DefinitionError: duplicate or invalid name, unknown or later dependency,
                bad timeout, or the saga already has runs in this process.
        """

        def register(func: StepFunction) -> StepHandle:
            step_name: str = name or str(getattr(func, "__name__", ""))
            self._add_step(
                step_name,
                func,
                after=after,
                parallel=parallel,
                retry=retry or DEFAULT_STEP_RETRY,
                timeout_seconds=timeout_seconds,
                compensate_on_failure=compensate_on_failure,
            )
            return StepHandle(self, step_name, func)

        return register(fn) if fn is not None else register

    def set_compensation(self, step: str, compensation: CompensationDefinition) -> None:
        """Attach a compensation to an already declared step."""
        self._check_mutable()
        if step not in self._steps:
            raise DefinitionError(f"saga {self.name!r} has no step {step!r} to compensate")
        current = self._steps[step]
        if current.compensation is not None:
            raise DefinitionError(f"step {step!r} of saga {self.name!r} already has a compensation")
        if current.wait is not None:
            raise DefinitionError(
                f"step {step!r} of saga {self.name!r} only waits; it has nothing to compensate"
            )
        self._steps[step] = _replace_step(current, compensation=compensation)

    def sleep(
        self,
        name: str,
        *,
        seconds: float,
        after: Sequence[str] | None = None,
        parallel: bool = False,
    ) -> None:
        """Declare a durable sleep: the run waits ``seconds`` without holding a worker.

        The wake-up is a delayed queue message, so a redeployment or a crash during the
        sleep changes nothing; the step's output is ``{"woke_at": <epoch seconds>}``.

        Raises:
            DefinitionError: ``seconds`` outside (0, 30 days], or as for ``step``.
        """
        _check_wait_seconds(self.name, name, "seconds", seconds)
        self._add_wait_step(name, WaitSpec(sleep_seconds=float(seconds)), after, parallel)

    def wait_for_event(
        self,
        name: str,
        *,
        topic: str,
        correlation: EventCorrelation = correlation_id_field,
        timeout_seconds: float = DEFAULT_EVENT_TIMEOUT_SECONDS,
        after: Sequence[str] | None = None,
        parallel: bool = False,
    ) -> None:
        """Declare a step that waits for an event on ``topic`` (``*`` and ``**`` allowed).

        ``correlation`` maps the event to the correlation id of the run it resumes (the
        run's idempotency key or run id); by default ``data["correlation_id"]``. The
        step's output is the event's data. An event that arrives before the run reaches
        this step is kept and consumed when it does. Without an event within
        ``timeout_seconds`` the step fails and the run compensates.

        Raises:
            DefinitionError: bad topic pattern, timeout outside (0, 30 days], or as for
                ``step``.
        """
        _check_wait_seconds(self.name, name, "timeout_seconds", timeout_seconds)
        pattern = validate_pattern(topic)
        if not callable(correlation):
            raise DefinitionError(f"step {name!r}: correlation must be a function of the event")
        wait = WaitSpec(
            topic=pattern, correlation=correlation, timeout_seconds=float(timeout_seconds)
        )
        self._add_wait_step(name, wait, after, parallel)

    def _add_wait_step(
        self, name: str, wait: WaitSpec, after: Sequence[str] | None, parallel: bool
    ) -> None:
        # The retry policy and timeout are unused (no code runs) but keep the record uniform.
        self._add_step(
            name,
            _runs_no_code,
            after=after,
            parallel=parallel,
            retry=DEFAULT_STEP_RETRY,
            timeout_seconds=30.0,
            compensate_on_failure=False,
            wait=wait,
        )

    @property
    def event_waits(self) -> Sequence[StepDefinition]:
        """Steps declared with ``wait_for_event``, in declaration order."""
        return tuple(step for step in self._steps.values() if step.wait and not step.wait.is_sleep)

    def invariant(self, fn: Invariant) -> Invariant:
        """Declare a check that every finished run must pass (used by ``relay chaos``)."""
        self._invariants.append(fn)
        return fn

    def on_event(
        self, pattern: str, *, input_from: Callable[[dict[str, Any]], Any] | None = None
    ) -> EventTrigger:
        """Start a run for every event whose topic matches ``pattern`` (``*``, ``**``)."""
        trigger = EventTrigger(pattern, input_from)
        self._events.append(trigger)
        return trigger

    def schedule(
        self,
        name: str,
        cron: str,
        *,
        input: Any = None,
        timezone: str = "UTC",
        description: str = "",
    ) -> Schedule:
        """Start a run on a cron schedule; one run per scheduled time, however often fired."""
        item = Schedule(name, cron, {} if input is None else input, timezone, description)
        self._schedules.append(item)
        return item

    @property
    def event_triggers(self) -> Sequence[EventTrigger]:
        """Event subscriptions declared with ``on_event``."""
        return tuple(self._events)

    @property
    def schedules(self) -> Sequence[Schedule]:
        """Schedules declared with ``schedule``."""
        return tuple(self._schedules)

    def _add_step(
        self,
        name: str,
        fn: StepFunction,
        *,
        after: Sequence[str] | None,
        parallel: bool,
        retry: RetryPolicy,
        timeout_seconds: float,
        compensate_on_failure: bool,
        wait: WaitSpec | None = None,
    ) -> None:
        self._check_mutable()
        _check_name("step", name)
        if name in self._steps:
            raise DefinitionError(f"saga {self.name!r} already has a step named {name!r}")
        if not callable(fn):
            raise DefinitionError(f"step {name!r} of saga {self.name!r} is not callable")
        if not 0 < timeout_seconds <= MAX_TIMEOUT_SECONDS:
            raise DefinitionError(
                f"timeout_seconds of step {name!r} must be in (0, {MAX_TIMEOUT_SECONDS:g}], "
                f"got {timeout_seconds}"
            )
        if after is not None and parallel:
            raise DefinitionError(f"step {name!r}: give either after=... or parallel=True")
        previous = list(self._steps.values())[-1] if self._steps else None
        if after is not None:
            deps = tuple(after)
            for dep in deps:
                if dep not in self._steps:
                    raise DefinitionError(
                        f"step {name!r} of saga {self.name!r} depends on {dep!r}, which is not "
                        "declared before it; declare dependencies first"
                    )
        elif parallel:
            deps = previous.after if previous else ()
        else:
            deps = (previous.name,) if previous else ()
        self._steps[name] = StepDefinition(
            name=name,
            fn=fn,
            after=deps,
            index=len(self._steps),
            retry=retry,
            timeout_seconds=timeout_seconds,
            compensate_on_failure=compensate_on_failure,
            wait=wait,
        )

    def _check_mutable(self) -> None:
        if self._is_frozen:
            raise DefinitionError(
                f"saga {self.name!r} is already in use; declare all steps at import time"
            )

    # -- use -------------------------------------------------------------------------

    def freeze(self) -> Saga:
        """Validate and lock the definition; called when the engine first uses the saga."""
        if not self._steps:
            raise DefinitionError(f"saga {self.name!r} has no steps")
        self._is_frozen = True
        return self

    @property
    def steps(self) -> Mapping[str, StepDefinition]:
        """Steps by name, in declaration order."""
        return self._steps

    @property
    def invariants(self) -> Sequence[Invariant]:
        """Checks declared with ``@saga.invariant``."""
        return tuple(self._invariants)

    @cached_property
    def successors(self) -> Mapping[str, tuple[str, ...]]:
        """For each step, the steps that list it as a dependency."""
        self.freeze()
        result: dict[str, list[str]] = {name: [] for name in self._steps}
        for step in self._steps.values():
            for dep in step.after:
                result[dep].append(step.name)
        return {name: tuple(names) for name, names in result.items()}

    @cached_property
    def definition_hash(self) -> str:
        """Content hash of the definition: structure plus the code of every function.

        A run records it; a worker whose hash differs checks the run's steps by name.
        """
        self.freeze()
        digest = hashlib.sha256(self.name.encode())
        for step in self._steps.values():
            digest.update(repr((step.name, step.after, step.timeout_seconds)).encode())
            if step.wait is not None:
                wait = step.wait
                digest.update(repr((wait.sleep_seconds, wait.topic, wait.timeout_seconds)).encode())
                digest.update(_code_fingerprint(wait.correlation))
            digest.update(_code_fingerprint(step.fn))
            if step.compensation:
                digest.update(_code_fingerprint(step.compensation.fn))
        return digest.hexdigest()[:16]

    def validate_input(self, raw: Any) -> Any:
        """Check ``raw`` against the input model and return its JSON form.

        Raises:
            InputValidationError: with one entry per bad field.
        """
        if self.input_model is None:
            return raw
        try:
            model = self.input_model.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise InputValidationError(saga=self.name, errors=errors) from None
        return model.model_dump(mode="json")

    def parse_input(self, stored: Any) -> Any:
        """Turn stored JSON input back into the input model for step code."""
        if self.input_model is None:
            return stored
        return self.input_model.model_validate(stored)

    def build_output(self, outputs: Mapping[str, Any]) -> Any:
        """The run's output once every step succeeded."""
        if self.output is not None:
            return self.output(outputs)
        return dict(outputs)


def _check_wait_seconds(saga: str, step: str, field_name: str, seconds: float) -> None:
    if not 0 < seconds <= MAX_WAIT_SECONDS:
        raise DefinitionError(
            f"{field_name} of step {step!r} of saga {saga!r} must be in (0, {MAX_WAIT_SECONDS:g}] "
            f"(30 days, Cloud Tasks' scheduling limit), got {seconds}; chain steps for longer"
        )


def _replace_step(step: StepDefinition, **changes: Any) -> StepDefinition:
    values = {name: getattr(step, name) for name in StepDefinition.__dataclass_fields__}
    values.update(changes)
    return StepDefinition(**values)


def _code_fingerprint(fn: Any) -> bytes:
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    if code is None:
        return repr(getattr(target, "__qualname__", target)).encode()
    return _fingerprint_code(code)


def _fingerprint_code(code: CodeType) -> bytes:
    # Nested code objects (lambdas, comprehensions) repr with their memory address, so
    # they are fingerprinted recursively to keep the hash stable across processes.
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(
            _fingerprint_code(const) if isinstance(const, CodeType) else repr(const).encode()
        )
    return b"\x00".join(parts)
