"""The state store port: durable run headers and per-step records with conditional writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from core.domain.records import Message, RunId, RunRecord, RunSnapshot, StateChange, StepRecord
from core.domain.status import RunStatus


def check_run_ids(run_id: str, runs: Sequence[RunRecord], steps: Sequence[StepRecord]) -> None:
    """Reject records of another run: a change is one atomic write to one run.

    Every adapter calls it before writing, so a change that mixes runs is refused the
    same way everywhere, and before anything is written.

    Raises:
        ValueError: a record's ``run_id`` is not ``run_id``.
    """
    records: list[RunRecord | StepRecord] = [*runs, *steps]
    for record in records:
        if record.run_id != run_id:
            raise ValueError(f"record of run {record.run_id!r} in a change to run {run_id!r}")


class StateStore(Protocol):
    """Durable state of runs; every mutation is a conditional (compare-and-set) write.

    Contract (enforced by ``tests/contract/test_state_store.py`` for every adapter):

    * ``create_run`` writes the header, every step record and the outbox atomically, and
      only if no run with that id exists. If one does, it writes nothing and returns the
      stored header (``created`` False): run ids derived from idempotency keys make
      starts idempotent.
    * ``apply`` is atomic: all records and outbox messages of the change are written, or
      none. A record is written only if the stored version is ``record.version - 1``
      (a new step record with ``version == 1`` must not exist yet); each ``checks`` entry
      must still match. Any mismatch raises ``core.errors.ConcurrencyConflict`` and
      writes nothing, so two workers claiming the same step cannot both win and a
      commit fenced by a stale claim is rejected.
    * Reads are strongly consistent with earlier successful writes of the same process.
    * Unreachable or throttling backends raise ``core.errors.StoreUnavailable``.
    * A write the backend refuses as invalid raises ``core.errors.RequestRejected`` and
      writes nothing. Which backends refuse what (DynamoDB items over 400 KB, Firestore
      documents over 1 MiB; SQLite and memory store any size) is the contract of
      ``tests/contract/test_request_rejected.py``.
    """

    @property
    def delivers_outbox(self) -> bool:
        """True when the store enqueues ``outbox`` messages inside its own transaction.

        When False the engine enqueues them on the task queue after the write commits;
        a crash in between is healed by re-drive on redelivery and by the sweeper.
        """
        ...

    def create_run(
        self, *, run: RunRecord, steps: Sequence[StepRecord], outbox: Sequence[Message]
    ) -> tuple[RunRecord, bool]:
        """Create a run with its step records and first messages, unless it exists.

        Returns:
            The stored header and whether this call created it.
        """
        ...

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        """Read a run header and all its step records; None when the run does not exist."""
        ...

    def apply(self, *, change: StateChange) -> None:
        """Write ``change`` atomically if every version precondition holds.

        Raises:
            ConcurrencyConflict: a record or check no longer matches; nothing was written.
        """
        ...

    def list_runs(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Run headers, newest first, optionally filtered by saga and status."""
        ...

    def count_runs_by_status(self, *, saga: str | None = None) -> Mapping[RunStatus, int]:
        """How many runs are in each status (for progress displays and the sweeper)."""
        ...

    def describe(self) -> Mapping[str, str]:
        """Where this store points (path, project, table, endpoint) for logs and errors."""
        ...
