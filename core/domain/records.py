"""Persisted records of a run: one header per run and one record per step.

Records are frozen; every change produces a new record whose ``version`` is one higher,
and adapters write it only if the stored version is still the one it was derived from
(optimistic concurrency, see docs/adr/0001-optimistic-concurrency.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from core.domain.status import Action, RunStatus, StepStatus

RunId = NewType("RunId", str)
StepName = NewType("StepName", str)

JSON = Any
"""A JSON value (dict, list, str, int, float, bool or None) as produced by ``json.loads``."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The header of one run of a saga.

    ``definition_hash`` is the content hash of the saga definition the run started under;
    ``is_cancel_requested`` makes the compensation end in CANCELLED instead of COMPENSATED.
    ``redrive_count`` and ``redriven_at`` are the sweeper's bookkeeping: how often it
    re-drove the run and when it last did, so its back-off survives a fresh container
    (``core/engine/sweeper.py``).
    """

    run_id: RunId
    saga: str
    status: RunStatus
    input: JSON
    definition_hash: str
    created_at: float
    updated_at: float
    idempotency_key: str | None = None
    output: JSON = None
    error: str | None = None
    is_cancel_requested: bool = False
    version: int = 1
    redrive_count: int = 0
    redriven_at: float | None = None

    def evolve(self, *, now: float, **changes: Any) -> RunRecord:
        """Return the next version of this record with ``changes`` applied."""
        return dataclasses.replace(self, updated_at=now, version=self.version + 1, **changes)

    def redriven(self, *, now: float) -> RunRecord:
        """The next version after the sweeper re-drove the run at ``now``.

        ``updated_at`` stays: the sweeper's bookkeeping is not progress of the run.
        """
        return dataclasses.replace(
            self, version=self.version + 1, redrive_count=self.redrive_count + 1, redriven_at=now
        )


@dataclass(frozen=True, slots=True)
class StepRecord:
    """The state of one step of one run.

    ``attempt`` counts every claim of the step (execute and compensate) and never goes
    down, so message ids derived from it are unique per logical delivery.
    ``budget_start`` is the attempt number the current retry budget counts from: it moves
    when compensation starts and when a run is retried by hand.
    ``output`` holds the JSON output inline, or ``{"$ref": ...}`` when the I/O manager
    holds it.
    """

    run_id: RunId
    name: StepName
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    budget_start: int = 0
    lease_until: float | None = None
    retry_at: float | None = None
    output: JSON = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    version: int = 1

    @property
    def attempts_in_budget(self) -> int:
        """Attempts used since the current retry budget started."""
        return self.attempt - self.budget_start

    def evolve(self, *, now: float, **changes: Any) -> StepRecord:
        """Return the next version of this record with ``changes`` applied."""
        return dataclasses.replace(self, updated_at=now, version=self.version + 1, **changes)

    def has_live_lease(self, now: float) -> bool:
        """True while a worker holds this step and its lease has not run out."""
        return self.lease_until is not None and self.lease_until > now


@dataclass(frozen=True, slots=True)
class Message:
    """One queue delivery: do ``action`` to ``step`` of ``run_id``, as attempt ``attempt``.

    ``not_before`` (epoch seconds) delays delivery (retry backoff, durable sleep).
    """

    run_id: RunId
    step: StepName
    action: Action
    attempt: int
    not_before: float | None = None

    @property
    def message_id(self) -> str:
        """The deterministic id that lets every queue drop a duplicate enqueue."""
        return f"{self.run_id}/{self.step}/{self.action.value}/{self.attempt}"

    def to_json(self) -> dict[str, Any]:
        """The wire form of the message (queue bodies, HTTP deliveries)."""
        body: dict[str, Any] = {
            "run_id": self.run_id,
            "step": self.step,
            "action": self.action.value,
            "attempt": self.attempt,
        }
        if self.not_before is not None:
            body["not_before"] = self.not_before
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Message:
        """Parse the wire form; raises ``ValueError`` naming the bad field."""
        try:
            run_id = body["run_id"]
            step = body["step"]
            action = Action(body["action"])
            attempt = body["attempt"]
        except KeyError as exc:
            raise ValueError(f"message is missing field {exc.args[0]!r}") from None
        except ValueError:
            raise ValueError(
                f"message field 'action' has unknown value {body['action']!r}"
            ) from None
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("message field 'run_id' must be a non-empty string")
        if not isinstance(step, str) or not step:
            raise ValueError("message field 'step' must be a non-empty string")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise ValueError("message field 'attempt' must be a non-negative integer")
        not_before = body.get("not_before")
        if not_before is not None and not isinstance(not_before, int | float):
            raise ValueError("message field 'not_before' must be a number")
        return cls(RunId(run_id), StepName(step), action, attempt, not_before)


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run header with all its step records, read together."""

    run: RunRecord
    steps: Mapping[StepName, StepRecord]

    def step(self, name: str) -> StepRecord:
        """The record of step ``name``; raises ``KeyError`` when the run has no such step."""
        return self.steps[StepName(name)]


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """A read-set entry: the write is valid only if this step is still at ``version``."""

    step: StepName
    version: int


@dataclass(frozen=True, slots=True)
class StateChange:
    """One atomic, conditional write to a run.

    Each record in ``run`` / ``steps`` replaces the stored record whose version is
    ``record.version - 1``; each ``checks`` entry asserts a step is unchanged without
    writing it. ``outbox`` holds the messages the change makes due: they must be
    enqueued if and only if the change commits (atomically by stores that share a
    transaction with the queue, otherwise by the engine right after the write).
    """

    run_id: RunId
    run: RunRecord | None = None
    steps: tuple[StepRecord, ...] = ()
    checks: tuple[VersionCheck, ...] = ()
    outbox: tuple[Message, ...] = field(default=())
