"""The I/O manager port: storage for step outputs too large to keep inline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

Serializer = Literal["json", "pickle"]


class IOManager(Protocol):
    """Stores results by (run id, step name, result id), isolated per run.

    Contract (``tests/contract/test_io_manager.py``): ``save`` then ``load`` returns an
    equal value; saving the same key again overwrites it (idempotent retries);
    ``list_results`` returns result ids in save order; ``clear_run`` deletes every
    result of the run and returns how many it deleted. JSON is the default format;
    pickle is used only when the caller asks for it, because unpickling runs code.
    """

    def save(
        self,
        *,
        run_id: str,
        step: str,
        result_id: str,
        value: Any,
        serializer: Serializer = "json",
    ) -> str:
        """Store ``value`` and return a reference string (a path or object URL)."""
        ...

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        ...

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The result ids stored for one step of one run."""
        ...

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result of ``run_id``; returns the number deleted."""
        ...

    def describe(self) -> Mapping[str, str]:
        """Where results are kept, for logs and errors."""
        ...
