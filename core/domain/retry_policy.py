"""Retry policies: how often a step or compensation is tried and how long to wait between."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import DefinitionError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing step is retried.

    The delay before attempt ``n + 1`` is ``initial_delay_seconds * backoff_factor**(n-1)``
    capped at ``max_delay_seconds``, then reduced by up to ``jitter`` (a fraction) at
    random so that many runs failing together do not retry in lockstep.
    ``non_retryable`` names exception types (``"module.Class"`` or bare class names) that
    fail the step at once.
    """

    max_attempts: int = 3
    initial_delay_seconds: float = 1.0
    backoff_factor: float = 2.0
    max_delay_seconds: float = 300.0
    jitter: float = 0.5
    non_retryable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DefinitionError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_delay_seconds < 0 or self.max_delay_seconds < 0:
            raise DefinitionError("retry delays must not be negative")
        if self.backoff_factor < 1:
            raise DefinitionError(f"backoff_factor must be >= 1, got {self.backoff_factor}")
        if not 0 <= self.jitter <= 1:
            raise DefinitionError(f"jitter must be between 0 and 1, got {self.jitter}")

    def is_retryable_type(self, exc: BaseException) -> bool:
        """False when ``exc``'s type (or a base class) is listed in ``non_retryable``."""
        for klass in type(exc).__mro__:
            qualified = f"{klass.__module__}.{klass.__qualname__}"
            if klass.__qualname__ in self.non_retryable or qualified in self.non_retryable:
                return False
        return True


DEFAULT_STEP_RETRY = RetryPolicy()
DEFAULT_COMPENSATION_RETRY = RetryPolicy(max_attempts=10, initial_delay_seconds=1.0)
