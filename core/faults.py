"""Fault injection for chaos testing, configured by ``RELAY_FAULTS``.

Format: rules separated by ``;``. A rule is ``TARGET:KIND[=SECONDS]@PROBABILITY``, and one
optional ``seed=N`` item makes the choices repeatable.

* ``TARGET`` is ``[saga.]step[/action]``; ``*`` matches anything. Without ``/action`` a
  rule applies to ``execute`` only, so injected failures do not also break the
  compensations that are meant to clean up after them (``/compensate`` or ``/*`` opt in).
* ``KIND`` is one of:

  - ``fail``: the attempt fails before the step function runs (a retryable error);
  - ``crash``: the worker process exits hard (``os._exit``) after the step function ran
    (its side effects happened) and before the result is committed;
  - ``delay=SECONDS``: the attempt sleeps that long before running the function;
  - ``duplicate``: the queue delivers the message twice.

Example: ``order.charge_payment:fail@0.2;*:crash@0.05;*:duplicate@0.1;*:delay=0.05@0.1``.

``fail``, ``delay`` and ``crash`` are injected by ``FaultInjectingExecutor``, a wrapper
around the step executor that the composition root (``functions/wiring.py``) builds only
when ``RELAY_FAULTS`` is set; ``duplicate`` by the local dispatcher. The runner knows
nothing of faults.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NoReturn

from core.engine.executor import AttemptOutcome
from core.errors import ConfigurationError

if TYPE_CHECKING:
    from core.domain.context import StepContext
    from core.domain.retry_policy import RetryPolicy
    from core.domain.saga import StepFunction
    from core.engine.executor import AttemptExecutor

log = logging.getLogger("relay.faults")

FAULTS_ENV = "RELAY_FAULTS"
CRASH_EXIT_CODE = 137  # What a SIGKILLed process reports; tools treat it as a crash.


class FaultKind(StrEnum):
    """What an injected fault does."""

    FAIL = "fail"
    CRASH = "crash"
    DELAY = "delay"
    DUPLICATE = "duplicate"


class InjectedFault(Exception):
    """Raised inside an attempt by a ``fail`` rule; retryable like any step error."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One parsed rule of ``RELAY_FAULTS``."""

    saga: str
    step: str
    action: str
    kind: FaultKind
    probability: float
    delay_seconds: float = 0.0

    def matches(self, *, saga: str, step: str, action: str) -> bool:
        """True when this rule targets the given saga, step and action."""
        return (
            self.saga in ("*", saga) and self.step in ("*", step) and self.action in ("*", action)
        )


class FaultPlan:
    """The faults to inject, with a random source that can be seeded."""

    def __init__(self, rules: tuple[FaultRule, ...] = (), *, seed: int | None = None) -> None:
        self.rules = rules
        self.seed = seed
        # A seed alone would make every process (and every restarted worker) replay the
        # same choices: a worker respawned after an injected crash would crash again on
        # its first step, forever. Mixing in the process id keeps one process repeatable
        # for a given pid while processes differ.
        self._rng = random.Random(None if seed is None else f"{seed}:{os.getpid()}")
        self._lock = threading.Lock()

    @property
    def is_empty(self) -> bool:
        """True when nothing is injected."""
        return not self.rules

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultPlan:
        """The plan in ``RELAY_FAULTS``; empty when unset."""
        return cls.parse(environ.get(FAULTS_ENV, ""))

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Parse the ``RELAY_FAULTS`` format (see the module docstring).

        Raises:
            ConfigurationError: naming the rule that is malformed and why.
        """
        rules: list[FaultRule] = []
        seed: int | None = None
        for raw in spec.split(";"):
            item = raw.strip()
            if not item:
                continue
            if item.startswith("seed="):
                try:
                    seed = int(item[5:])
                except ValueError:
                    raise ConfigurationError(
                        f"{FAULTS_ENV}: seed must be an integer in {item!r}"
                    ) from None
                continue
            rules.append(_parse_rule(item))
        return cls(tuple(rules), seed=seed)

    def _roll(self, probability: float) -> bool:
        with self._lock:
            return self._rng.random() < probability

    def should(self, kind: FaultKind, *, saga: str, step: str, action: str) -> bool:
        """Decide, at random per the matching rules, whether to inject ``kind`` now."""
        for rule in self.rules:
            matches = rule.kind is kind and rule.matches(saga=saga, step=step, action=action)
            if matches and self._roll(rule.probability):
                return True
        return False

    def delay_seconds(self, *, saga: str, step: str, action: str) -> float:
        """Total injected delay for this attempt (zero when no delay rule fires)."""
        total = 0.0
        for rule in self.rules:
            matches = rule.kind is FaultKind.DELAY and rule.matches(
                saga=saga, step=step, action=action
            )
            if matches and self._roll(rule.probability):
                total += rule.delay_seconds
        return total

    def describe(self) -> str:
        """A one-line summary for startup logs."""
        if self.is_empty:
            return "no faults"
        parts = [
            f"{r.saga}.{r.step}/{r.action}:{r.kind.value}"
            + (f"={r.delay_seconds:g}" if r.kind is FaultKind.DELAY else "")
            + f"@{r.probability:g}"
            for r in self.rules
        ]
        return "; ".join(parts) + (f"; seed={self.seed}" if self.seed is not None else "")


def crash_process() -> NoReturn:
    """End this process at once, as a kill would: no cleanup, exit code 137."""
    logging.shutdown()
    os._exit(CRASH_EXIT_CODE)


class FaultInjectingExecutor:
    """An ``AttemptExecutor`` that injects the ``fail``, ``delay`` and ``crash`` rules.

    ``delay`` sleeps before the attempt; ``fail`` makes the attempt fail (retryably)
    without calling the step function; ``crash`` ends the process after the step
    function returned. That is the point chaos tests need: the step's side effects
    happened and its result is not committed. The runner does nothing between getting an
    outcome and committing it that touches run state (it converts the output, may store a
    large one, records metrics), so crashing here, inside the wrapper, is the same point
    of the protocol as crashing just before the commit, without a fault hook in the
    runner.

    Args:
        inner: The executor that really runs step functions.
        plan: The parsed ``RELAY_FAULTS``.
        crash: How to end the process (tests pass one that raises instead).
    """

    def __init__(
        self,
        inner: AttemptExecutor,
        plan: FaultPlan,
        *,
        crash: Callable[[], NoReturn] = crash_process,
    ) -> None:
        self._inner = inner
        self._plan = plan
        self._crash = crash

    @property
    def plan(self) -> FaultPlan:
        """The rules this executor injects."""
        return self._plan

    def run(
        self, fn: StepFunction, ctx: StepContext, *, timeout_seconds: float, retry: RetryPolicy
    ) -> AttemptOutcome:
        """Run the attempt through the inner executor, with the faults the plan rolls."""
        names = {"saga": ctx.saga, "step": ctx.step, "action": ctx.action.value}
        delay = self._plan.delay_seconds(**names)
        if delay:
            time.sleep(delay)
        if self._plan.should(FaultKind.FAIL, **names):
            log.warning(
                "RELAY_FAULTS: injected failure",
                extra={"run_id": ctx.run_id, "attempt": ctx.attempt, **names},
            )
            outcome = AttemptOutcome(
                is_success=False, error=f"{InjectedFault.__name__}: {FAULTS_ENV}"
            )
        else:
            outcome = self._inner.run(fn, ctx, timeout_seconds=timeout_seconds, retry=retry)
        if self._plan.should(FaultKind.CRASH, **names):
            log.warning(
                "RELAY_FAULTS: crashing worker before commit",
                extra={"run_id": ctx.run_id, "attempt": ctx.attempt, **names},
            )
            self._crash()
        return outcome

    def describe(self) -> str:
        """The inner executor and the injected faults."""
        return f"{self._inner.describe()}; faults: {self._plan.describe()}"

    def close(self) -> None:
        """Close the inner executor."""
        self._inner.close()


def _parse_rule(item: str) -> FaultRule:
    target, sep, rest = item.rpartition(":")
    if not sep or not target:
        raise ConfigurationError(
            f"{FAULTS_ENV}: rule {item!r} must look like TARGET:KIND@PROBABILITY"
        )
    kind_part, at, probability_part = rest.partition("@")
    if not at:
        raise ConfigurationError(f"{FAULTS_ENV}: rule {item!r} lacks '@PROBABILITY'")
    try:
        probability = float(probability_part)
    except ValueError:
        raise ConfigurationError(f"{FAULTS_ENV}: probability in {item!r} is not a number") from None
    if not 0 <= probability <= 1:
        raise ConfigurationError(f"{FAULTS_ENV}: probability in {item!r} must be in [0, 1]")
    kind_name, eq, seconds = kind_part.partition("=")
    try:
        kind = FaultKind(kind_name)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ConfigurationError(
            f"{FAULTS_ENV}: unknown fault {kind_name!r} in {item!r}; known: {known}"
        ) from None
    delay = 0.0
    if kind is FaultKind.DELAY:
        try:
            delay = float(seconds.removesuffix("s"))
        except ValueError:
            raise ConfigurationError(
                f"{FAULTS_ENV}: delay needs seconds, as in '*:delay=0.5@0.1'; got {item!r}"
            ) from None
    elif eq:
        raise ConfigurationError(f"{FAULTS_ENV}: only 'delay' takes a value; got {item!r}")
    step_part, slash, action = target.partition("/")
    saga, dot, step = step_part.rpartition(".")
    return FaultRule(
        saga=saga if dot else "*",
        step=step,
        action=action if slash else "execute",
        kind=kind,
        probability=probability,
        delay_seconds=delay,
    )
