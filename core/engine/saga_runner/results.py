"""What handling one delivery answers the queue, and the tunables of the protocol."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What one delivery did; control flow and metrics branch on this, never on text.

    Every outcome but ``RETRY_LATER`` acknowledges the message.
    """

    COMMITTED = "committed"
    """An attempt (or the end of a wait) ran and its result was written."""
    PARKED = "parked"
    """The step now sleeps or waits for an event until its deadline."""
    EXHAUSTED = "exhausted"
    """The step or its compensation was out of attempts; the failure was recorded."""
    FINISHED = "finished"
    """Nothing was left to undo: the compensation ended (COMPENSATED or CANCELLED)."""
    RUN_FAILED = "run_failed"
    """This worker cannot run the run (saga unknown or changed); the run is FAILED."""
    REDRIVEN = "redriven"
    """The step was past this message; the messages its state needs were enqueued."""
    DISCARDED = "discarded"
    """The attempt ran, but a newer claim had taken the step: its result was dropped."""
    DROPPED = "dropped"
    """The message asks for nothing this run can do (no such run or step, run ended)."""
    RETRY_LATER = "retry_later"
    """Not now (a live lease, a retry not due, conflicts): deliver again later."""


@dataclass(frozen=True, slots=True)
class HandleResult:
    """What to tell the queue about one delivery.

    ``outcome`` is what happened, ``detail`` the same for people (logs, HTTP bodies), and
    ``retry_after_seconds`` how long a ``RETRY_LATER`` message should wait.
    """

    outcome: Outcome
    detail: str
    retry_after_seconds: float = 0.0

    @property
    def is_done(self) -> bool:
        """True when the message needs no further delivery (acknowledge it)."""
        return self.outcome is not Outcome.RETRY_LATER

    @classmethod
    def ack(cls, outcome: Outcome, detail: str) -> HandleResult:
        """The message needs no further delivery."""
        assert outcome is not Outcome.RETRY_LATER, "use retry_later"
        return cls(outcome, detail)

    @classmethod
    def retry_later(cls, seconds: float, detail: str) -> HandleResult:
        """Deliver the message again after ``seconds`` (a live lease, an early delivery)."""
        return cls(Outcome.RETRY_LATER, detail, max(seconds, 0.05))


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Tunables of the protocol.

    ``lease_grace_seconds`` is added to a step's timeout to form its lease, so a slow
    commit after a long attempt is not mistaken for a crash. ``conflict_retries`` bounds
    how often a decision is re-read and re-made after losing a conditional write.
    """

    lease_grace_seconds: float = 5.0
    conflict_retries: int = 10
    inline_output_limit_bytes: int = 64 * 1024
    """Larger step outputs, and run inputs, go through the I/O manager."""
    max_input_bytes: int = 10 * 1024 * 1024
    """Larger run inputs are refused at the start (``InputTooLargeError``), nothing written."""
