"""The I/O manager port: storage for outputs too large to keep inline, per run.

Results are keyed ``{run}/{step}/{result}``: every key starts with the run id, so runs
are isolated from one another and a whole run is listed or cleared by its prefix. A
*chunk* is a result whose id is its position in a stream (``chunk_result_id``):
a streaming task saves chunk N idempotently and, after a crash, resumes after the last
chunk its step record committed (``list_chunks`` shows what reached storage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

Serializer = Literal["json", "parquet", "pickle"]
"""How a result is stored. ``None`` where a method takes it means "choose": Parquet for a
``pyarrow.Table`` or ``RecordBatch``, JSON for everything else. Pickle is never chosen."""


class IOManager(Protocol):
    """Stores results by (run id, step name, result id), isolated per run.

    Contract (``tests/contract/test_io_manager.py``, run on every adapter):

    * ``save`` then ``load`` returns an equal value (a fresh copy); saving the same key
      again overwrites it, in whichever format, so a retried attempt is idempotent.
    * ``list_results`` returns the ids saved with ``save`` in first-save order;
      ``list_chunks`` the chunk indexes saved with ``save_chunk``, ascending, whatever
      order they were saved in; ``list_steps`` the steps of a run that hold anything.
    * ``clear_run`` deletes every result and chunk of the run and returns how many.
    * ``mark_run_finished`` starts the retention of a run that ended: the backend deletes
      its results the deployment's retention after ``finished_at``, the moment the state
      store stamps the run record for expiry, so outputs expire with their run
      (``docs/adr/0008-outputs-expire-with-their-run.md``). Marking never deletes or
      changes a result; marking again is harmless.
    * Codecs (``core.ports.io_codec``): JSON by default; Parquet for Arrow tables, which
      needs the ``arrow`` extra (``MissingExtraError`` otherwise); pickle only when the
      caller asks for it, and a pickle is loaded only when Relay's codec framed it
      (``ResultFormatError`` otherwise), because unpickling runs code.
    * Ids that are not one safe key component raise ``ValueError``; a key never saved
      raises ``KeyError``; an unreachable backend raises ``StoreUnavailable``.
    """

    def save(
        self,
        *,
        run_id: str,
        step: str,
        result_id: str,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store ``value`` and return a reference string (a path or object URL)."""
        ...

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        ...

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The result ids saved with ``save`` for one step of one run, in first-save order."""
        ...

    def save_chunk(
        self,
        *,
        run_id: str,
        step: str,
        index: int,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store chunk ``index`` (0-based) of a step's stream, replacing an earlier save."""
        ...

    def load_chunk(self, *, run_id: str, step: str, index: int) -> Any:
        """Return chunk ``index``; raises ``KeyError`` when it was never saved."""
        ...

    def list_chunks(self, *, run_id: str, step: str) -> list[int]:
        """The chunk indexes stored for one step of one run, ascending."""
        ...

    def list_steps(self, *, run_id: str) -> list[str]:
        """The steps of ``run_id`` that hold results or chunks, sorted by name."""
        ...

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result and chunk of ``run_id``; returns the number deleted."""
        ...

    def mark_run_finished(self, *, run_id: str, finished_at: float) -> int:
        """Start the retention of every result of ``run_id``, which ended at ``finished_at``.

        Returns the number of results (and chunks) the backend now retains from that time.
        """
        ...

    def describe(self) -> Mapping[str, str]:
        """Where results are kept, for logs and errors."""
        ...
