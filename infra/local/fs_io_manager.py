"""Step outputs too large to keep inline, as files under a base directory.

Layout: ``<base>/<run_id>/<step>/<result_id>.json`` (``.parquet`` for Arrow tables,
``.pkl`` when the caller asked for pickle), plus one ``_order`` file per step listing the
ids saved with ``save`` in first-save order; chunks (``chunk-NNNNNNNNNN``) order by name.
Directories are 0700 and files 0600 (``mkstemp`` creates them so): outputs are run data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from core.ports.io_codec import (
    SUFFIXES,
    check_key_component,
    check_result_id,
    chunk_index,
    chunk_result_id,
    decode_value,
    encode_value,
    split_name,
)
from core.ports.io_manager import Serializer
from infra.local.private_files import ensure_private_dir, make_private_dirs

_ORDER_FILE: Final = "_order"
RESULTS_DIR_NAME: Final = "outputs"


class FilesystemIOManager:
    """An ``IOManager`` keeping each result in its own file, written atomically.

    A result is written to a temporary file, fsync'd and renamed over its final name, so
    a reader (or a crash) never sees half a file and the file is on disk before the step
    commit that references it.

    Args:
        base_path: The directory results live under; created if missing.
    """

    def __init__(self, base_path: Path | str) -> None:
        self._base = ensure_private_dir(Path(base_path).resolve())

    @classmethod
    def from_settings(cls, data_dir: Path) -> FilesystemIOManager:
        """A manager keeping results under ``<data_dir>/outputs``."""
        ensure_private_dir(data_dir)
        return cls(data_dir / RESULTS_DIR_NAME)

    def describe(self) -> Mapping[str, str]:
        """The base directory, for logs and errors."""
        return {"backend": "local", "path": str(self._base)}

    def save(
        self,
        *,
        run_id: str,
        step: str,
        result_id: str,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store ``value`` atomically, replacing any earlier result with this key.

        Returns:
            A ``file://`` URI of the stored file.

        Raises:
            TypeError: the chosen format cannot hold ``value``.
            ValueError: an id is not a safe path component.
            MissingExtraError: Parquet without pyarrow installed.
        """
        step_dir = self._step_dir(run_id, step)
        return self._put(step_dir, check_result_id(result_id), value, serializer, is_ordered=True)

    def save_chunk(
        self,
        *,
        run_id: str,
        step: str,
        index: int,
        value: Any,
        serializer: Serializer | None = None,
    ) -> str:
        """Store chunk ``index`` atomically (``<id>.json`` under the step), replacing it."""
        step_dir = self._step_dir(run_id, step)
        return self._put(step_dir, chunk_result_id(index), value, serializer, is_ordered=False)

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        return self._get(self._step_dir(run_id, step), check_result_id(result_id))

    def load_chunk(self, *, run_id: str, step: str, index: int) -> Any:
        """Return chunk ``index``; raises ``KeyError`` when it was never saved."""
        return self._get(self._step_dir(run_id, step), chunk_result_id(index))

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The result ids saved with ``save`` for one step of one run, in first-save order."""
        step_dir = self._step_dir(run_id, step)
        try:
            lines = (step_dir / _ORDER_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        present = set(_stored_ids(step_dir))
        # dict.fromkeys de-duplicates (two racing first saves) and keeps the first position.
        return [result_id for result_id in dict.fromkeys(lines) if result_id in present]

    def list_chunks(self, *, run_id: str, step: str) -> list[int]:
        """The chunk indexes stored for one step of one run, ascending (one directory read)."""
        ids = _stored_ids(self._step_dir(run_id, step))
        return sorted({i for i in map(chunk_index, ids) if i is not None})

    def list_steps(self, *, run_id: str) -> list[str]:
        """The steps of ``run_id`` that hold results or chunks, sorted by name."""
        run_dir = self._base / check_key_component("run id", run_id)
        try:
            names = os.listdir(run_dir)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if any(_stored_ids(run_dir / name)))

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result of ``run_id``; returns the number of results deleted."""
        run_dir = self._base / check_key_component("run id", run_id)
        if not run_dir.is_dir():
            return 0
        count = sum(
            1 for _, _, names in os.walk(run_dir) for name in names if split_name(name) is not None
        )
        shutil.rmtree(run_dir)
        return count

    def mark_run_finished(self, *, run_id: str, finished_at: float) -> int:
        """Keep the run's results: the embedded backend keeps every run for good.

        SQLite never expires a run record, so its outputs stay as long as it does; delete a
        run's files with ``clear_run`` (docs/adr/0008). Returns how many results it holds.
        """
        run_dir = self._base / check_key_component("run id", run_id)
        return sum(
            1 for _, _, names in os.walk(run_dir) for name in names if split_name(name) is not None
        )

    def _put(
        self,
        step_dir: Path,
        result_id: str,
        value: Any,
        serializer: Serializer | None,
        *,
        is_ordered: bool,
    ) -> str:
        chosen, data = encode_value(
            value, serializer, f"{step_dir.parent.name}/{step_dir.name}/{result_id}"
        )
        make_private_dirs(step_dir)
        target = step_dir / (result_id + SUFFIXES[chosen])
        others = [step_dir / (result_id + s) for f, s in SUFFIXES.items() if f != chosen]
        if is_ordered and not target.exists() and not any(p.exists() for p in others):
            # Record the order before the file exists: a crash in between leaves an id
            # that list_results skips, never a result missing from the order.
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            with os.fdopen(os.open(step_dir / _ORDER_FILE, flags, 0o600), "a") as order:
                order.write(result_id + "\n")
        _write_atomically(target, data)
        for other in others:
            other.unlink(missing_ok=True)
        return target.as_uri()

    def _get(self, step_dir: Path, result_id: str) -> Any:
        for serializer, suffix in SUFFIXES.items():
            try:
                data = (step_dir / (result_id + suffix)).read_bytes()
            except FileNotFoundError:
                continue
            return decode_value(
                data, serializer, f"{step_dir.parent.name}/{step_dir.name}/{result_id}"
            )
        raise KeyError(
            f"no result {result_id!r} for step {step_dir.name!r} of run {step_dir.parent.name!r}"
        )

    def _step_dir(self, run_id: str, step: str) -> Path:
        return (
            self._base / check_key_component("run id", run_id) / check_key_component("step", step)
        )


def _stored_ids(step_dir: Path) -> list[str]:
    """The ids of the results stored in ``step_dir`` (none when it does not exist)."""
    try:
        names = os.listdir(step_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [parts[0] for parts in map(split_name, names) if parts is not None]


def _write_atomically(target: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # Make the rename itself durable: fsync the directory entry.
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
