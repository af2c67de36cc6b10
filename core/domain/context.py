"""The context a step or compensation function receives for one attempt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.domain.status import Action


@dataclass(frozen=True, slots=True)
class StepContext:
    """What step code knows about the attempt it runs in.

    ``idempotency_key`` is ``"<run_id>:<step>"``, the same on every attempt and in the
    step's compensation: pass it to external services so a retried charge is not a second
    charge and a refund can find the charge it undoes.
    ``input`` is the saga's validated input (an instance of its input model when it has
    one, JSON otherwise). ``outputs`` maps earlier steps to their outputs (JSON); large
    outputs are fetched from the I/O manager on first access.
    In a compensation, ``output`` is this step's own output (None when the step failed)
    and ``error`` says why the run is compensating.
    """

    run_id: str
    saga: str
    step: str
    action: Action
    attempt: int
    idempotency_key: str
    input: Any
    outputs: Mapping[str, Any]
    deadline_at: float
    output: Any = None
    error: str | None = None

    @property
    def is_compensation(self) -> bool:
        """True when this call undoes the step rather than doing it."""
        return self.action is Action.COMPENSATE
