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
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from core.errors import ConfigurationError

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

    def matches(self, *, saga: str | None, step: str, action: str) -> bool:
        """True when this rule targets the given saga, step and action.

        ``saga`` None means the caller does not know the saga (a queue message names only
        run, step and action), so the rule's saga is not checked.
        """
        return (
            (saga is None or self.saga in ("*", saga))
            and self.step in ("*", step)
            and self.action in ("*", action)
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

    def should(self, kind: FaultKind, *, saga: str | None, step: str, action: str) -> bool:
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
