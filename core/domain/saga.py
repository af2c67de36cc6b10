"""Saga definitions: named steps with compensations, retries, timeouts and dependencies.

A saga is declared once at import time and is immutable once a run uses it::

    class OrderInput(BaseModel):
        customer_id: str
        total_cents: int

    order = Saga("order", input_model=OrderInput)          # a Saga[OrderInput]

    @order.step(retry=RetryPolicy(max_attempts=5), timeout_seconds=10)
    def charge_payment(ctx: StepContext[OrderInput]) -> dict[str, str]:
        return payments.charge(key=ctx.idempotency_key, amount=ctx.input.total_cents)

    @charge_payment.compensation
    def refund_payment(ctx: StepContext[OrderInput]) -> None:
        payments.refund(key=ctx.idempotency_key)

``Saga`` is generic over its input: ``Saga("order", input_model=OrderInput)`` is a
``Saga[OrderInput]`` whose steps take ``StepContext[OrderInput]``, and a saga without an
input model is a ``Saga[JSONValue]``. A type checker refuses a step written for another
input.

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

The parts a saga is made of (step definitions, handles, waits) live in
``core/domain/steps.py``; the definition hash in ``core/domain/definition_hash.py``.
They are re-exported here, where the engine has always imported them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, Generic, overload

from pydantic import BaseModel, ValidationError
from typing_extensions import TypeVar

from core.domain.definition_hash import definition_hash
from core.domain.json_types import JSONValue
from core.domain.queues import QueueSettings
from core.domain.retry_policy import DEFAULT_STEP_RETRY, RetryPolicy
from core.domain.steps import (
    DEFAULT_EVENT_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
    MAX_WAIT_SECONDS,
    CompensationDefinition,
    EventCorrelation,
    InputT,
    Invariant,
    StepDefinition,
    StepFunction,
    StepHandle,
    UserStep,
    WaitSpec,
    check_name,
    check_wait_seconds,
    correlation_id_field,
    runs_no_code,
)
from core.domain.triggers import EventTrigger, Schedule, validate_pattern
from core.errors import DefinitionError, InputValidationError

__all__ = [
    "DEFAULT_EVENT_TIMEOUT_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "MAX_WAIT_SECONDS",
    "CompensationDefinition",
    "EventCorrelation",
    "Invariant",
    "Saga",
    "StepDefinition",
    "StepFunction",
    "StepHandle",
    "UserStep",
    "WaitSpec",
    "correlation_id_field",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
R = TypeVar("R")

OutputBuilder = Callable[[Mapping[str, JSONValue]], object]
"""Builds a run's output from its steps' outputs (JSON by step name)."""


class Saga(Generic[InputT]):
    """A named, ordered set of steps with compensations, generic over its input.

    Args:
        name: Stable name used in URLs (``/v1/sagas/{name}/runs``) and stored with runs.
        input_model: Pydantic model validating the run input; steps receive an instance
            of it. Without one, the input is JSON and passes through unchecked.
        description: One line shown by ``relay manifest`` and the CLI.
        output: Builds the run's output from step outputs; defaults to all step outputs.
        queue: Name of the queue that carries this saga's messages.
        queue_settings: Rate and redelivery settings of that queue (``relay manifest``
            publishes them for Terraform); sagas sharing a queue must not disagree.

    Raises:
        DefinitionError: the name cannot be part of URLs, message ids and task names.
    """

    @overload
    def __init__(
        self: Saga[JSONValue],
        name: str,
        input_model: None = None,
        *,
        description: str = "",
        output: OutputBuilder | None = None,
        queue: str = "relay-steps",
        queue_settings: QueueSettings | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Saga[ModelT],
        name: str,
        input_model: type[ModelT],
        *,
        description: str = "",
        output: OutputBuilder | None = None,
        queue: str = "relay-steps",
        queue_settings: QueueSettings | None = None,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        input_model: type[BaseModel] | None = None,
        *,
        description: str = "",
        output: OutputBuilder | None = None,
        queue: str = "relay-steps",
        queue_settings: QueueSettings | None = None,
    ) -> None:
        check_name("saga", name)
        self.name = name
        self.input_model = input_model
        self.description = description
        self.output = output
        self.queue = queue
        self.queue_settings = queue_settings
        self._steps: dict[str, StepDefinition] = {}
        self._invariants: list[Invariant] = []
        self._events: list[EventTrigger] = []
        self._schedules: list[Schedule] = []
        self._is_frozen = False

    def __repr__(self) -> str:
        model = self.input_model.__name__ if self.input_model else None
        return f"Saga(name={self.name!r}, input_model={model}, steps={list(self._steps)})"

    # -- declaration -----------------------------------------------------------------

    @overload
    def step(
        self,
        fn: UserStep[InputT, R],
        /,
        *,
        name: str | None = None,
        after: Sequence[str] | None = None,
        parallel: bool = False,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 30.0,
        compensate_on_failure: bool = True,
    ) -> StepHandle[InputT, R]: ...

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
    ) -> Callable[[UserStep[InputT, R]], StepHandle[InputT, R]]: ...

    def step(
        self,
        fn: UserStep[InputT, R] | None = None,
        /,
        *,
        name: str | None = None,
        after: Sequence[str] | None = None,
        parallel: bool = False,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = 30.0,
        compensate_on_failure: bool = True,
    ) -> StepHandle[InputT, R] | Callable[[UserStep[InputT, R]], StepHandle[InputT, R]]:
        """Declare a step (decorator, with or without arguments).

        Args:
            fn: The step function, when used as a bare decorator. It takes a
                ``StepContext`` of this saga's input type.
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

        def register(func: UserStep[InputT, R]) -> StepHandle[InputT, R]:
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
            return StepHandle(step_name, func, attach=self.set_compensation)

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
        self._steps[step] = dataclasses.replace(current, compensation=compensation)

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
        check_wait_seconds(self.name, name, "seconds", seconds)
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
        check_wait_seconds(self.name, name, "timeout_seconds", timeout_seconds)
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
            runs_no_code,
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
        input: JSONValue = None,
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
        fail_safe: bool = False,
    ) -> None:
        self._check_mutable()
        check_name("step", name)
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
            fail_safe=fail_safe,
        )

    def _check_mutable(self) -> None:
        if self._is_frozen:
            raise DefinitionError(
                f"saga {self.name!r} is already in use; declare all steps at import time"
            )

    # -- use -------------------------------------------------------------------------

    def freeze(self) -> Saga[InputT]:
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
    def streaming_steps(self) -> frozenset[str]:
        """Steps that commit chunks through the I/O manager (a pipeline's streaming tasks)."""
        return frozenset()

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
        return definition_hash(self.name, self._steps.values())

    def validate_input(self, raw: object) -> Any:
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

    def parse_input(self, stored: JSONValue) -> InputT:
        """Turn stored JSON input back into what steps receive: the model, or the JSON."""
        if self.input_model is None:
            return stored  # type: ignore[return-value]  # a saga without a model is a Saga[JSONValue]
        return self.input_model.model_validate(stored)  # type: ignore[return-value]  # InputT is the model

    def build_output(self, outputs: Mapping[str, JSONValue]) -> object:
        """The run's output once every step succeeded."""
        if self.output is not None:
            return self.output(outputs)
        return dict(outputs)
