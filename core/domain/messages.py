"""Queue messages: what a delivery asks a worker to do, and their versioned wire form.

A message is persisted too (SQS and Cloud Tasks bodies, the SQLite queue table, HTTP
deliveries to ``/v1/steps``), so its wire form carries a ``format`` number and the
parser keeps reading every earlier format: messages in flight during an upgrade load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NewType

from core.domain.status import Action

RunId = NewType("RunId", str)
StepName = NewType("StepName", str)


MESSAGE_FORMAT: Final = 2
"""The wire format ``Message.to_json`` writes (the ``format`` field of every body).

Format 1 (no ``format`` field) had no ``saga``; ``Message.from_json`` still reads it, so
messages in flight during an upgrade load, with ``saga`` None.
"""


@dataclass(frozen=True, slots=True)
class Message:
    """One queue delivery: do ``action`` to ``step`` of ``run_id`` (a run of ``saga``).

    ``not_before`` (epoch seconds) delays delivery (retry backoff, durable sleep).
    ``saga`` lets queues route and time out a message by saga and step; the engine always
    sets it. It is None only for a message written before messages named their saga
    (format 1) or built by hand; the worker then takes the saga from the run record.
    """

    run_id: RunId
    step: StepName
    action: Action
    attempt: int
    not_before: float | None = None
    saga: str | None = field(default=None, kw_only=True)

    @property
    def message_id(self) -> str:
        """The deterministic id that lets every queue drop a duplicate enqueue.

        The saga is not part of it: a run id already names one run of one saga, and
        leaving it out keeps the id of a format-1 message in flight equal to the id of
        the same message written again in format 2, so the two still deduplicate.
        """
        return f"{self.run_id}/{self.step}/{self.action.value}/{self.attempt}"

    def to_json(self) -> dict[str, Any]:
        """The wire form of the message (queue bodies, HTTP deliveries), format 2."""
        body: dict[str, Any] = {
            "format": MESSAGE_FORMAT,
            "saga": self.saga,
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
        """Parse the wire form, format 2 or the format-1 body that predates it.

        Raises:
            ValueError: naming the bad field (or a format this code does not know).
        """
        version = body.get("format", 1)
        if version not in (1, MESSAGE_FORMAT) or isinstance(version, bool):
            raise ValueError(
                f"message field 'format' is {version!r}; this worker reads formats 1 and "
                f"{MESSAGE_FORMAT} (a newer Relay wrote it?)"
            )
        try:
            run_id = body["run_id"]
            step = body["step"]
            action = Action(body["action"])
            attempt = body["attempt"]
            saga = body["saga"] if version == MESSAGE_FORMAT else None
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
        if saga is not None and (not isinstance(saga, str) or not saga):
            raise ValueError("message field 'saga' must be a non-empty string or null")
        not_before = body.get("not_before")
        if not_before is not None and (
            not isinstance(not_before, int | float) or isinstance(not_before, bool)
        ):
            raise ValueError("message field 'not_before' must be a number")
        return cls(RunId(run_id), StepName(step), action, attempt, not_before, saga=saga)
