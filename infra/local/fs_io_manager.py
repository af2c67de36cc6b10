"""Step outputs too large to keep inline, as files under a base directory.

Layout: ``<base>/<run_id>/<step>/<result_id>.json`` (or ``.pkl`` when the caller asked
for pickle), plus one ``_order`` file per step listing result ids in first-save order.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from core.ports.io_manager import Serializer

_SUFFIXES: Final[Mapping[Serializer, str]] = {"json": ".json", "pickle": ".pkl"}
_ORDER_FILE: Final = "_order"
RESULTS_DIR_NAME: Final = "outputs"


def _check_component(kind: str, value: str) -> str:
    """Return ``value`` if it is safe as one path component, else raise ``ValueError``.

    Ids come from run ids and step names that users influence; a ``/`` or ``..`` would
    let one run read or delete another's files (or anything else on the disk).
    """
    if (
        not value
        or value in {".", ".."}
        or "/" in value
        or "\\" in value
        or "\x00" in value
        or (os.altsep is not None and os.altsep in value)
    ):
        raise ValueError(
            f"{kind} {value!r} cannot be used as a storage key: it must be non-empty, "
            "not '.' or '..', and contain no '/', '\\' or NUL"
        )
    return value


def _encode_value(value: Any, serializer: Serializer, where: str) -> bytes:
    """Serialise ``value``; ``TypeError`` naming ``where`` when JSON cannot hold it."""
    if serializer == "pickle":
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if serializer != "json":
        raise ValueError(f"unknown serializer {serializer!r}; use 'json' or 'pickle'")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"result {where} is not JSON-serialisable ({exc}); return JSON data or save "
            "it with serializer='pickle'"
        ) from exc


def _decode_value(data: bytes, serializer: Serializer) -> Any:
    """The value ``encode_value`` serialised."""
    if serializer == "pickle":
        return pickle.loads(data)  # Safe: we wrote it, and only on request.
    return json.loads(data)


class FilesystemIOManager:
    """An ``IOManager`` keeping each result in its own file, written atomically.

    A result is written to a temporary file, fsync'd and renamed over its final name, so
    a reader (or a crash) never sees half a file and the file is on disk before the step
    commit that references it.

    Args:
        base_path: The directory results live under; created if missing.
    """

    def __init__(self, base_path: Path | str) -> None:
        self._base = Path(base_path).resolve()
        self._base.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, data_dir: Path) -> FilesystemIOManager:
        """A manager keeping results under ``<data_dir>/outputs``."""
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
        serializer: Serializer = "json",
    ) -> str:
        """Store ``value`` atomically, replacing any earlier result with this key.

        Returns:
            A ``file://`` URI of the stored file.

        Raises:
            TypeError: ``value`` is not JSON-serialisable and pickle was not asked for.
            ValueError: an id is not a safe path component.
        """
        step_dir = self._step_dir(run_id, step)
        _check_component("result id", result_id)
        data = _encode_value(value, serializer, f"{run_id}/{step}/{result_id}")
        step_dir.mkdir(parents=True, exist_ok=True)
        target = step_dir / (result_id + _SUFFIXES[serializer])
        other = step_dir / (result_id + _SUFFIXES["pickle" if serializer == "json" else "json"])
        if not target.exists() and not other.exists():
            # Record the order before the file exists: a crash in between leaves an id
            # that list_results skips, never a result missing from the order.
            with open(step_dir / _ORDER_FILE, "a", encoding="utf-8") as order:
                order.write(result_id + "\n")
        _write_atomically(target, data)
        other.unlink(missing_ok=True)
        return target.as_uri()

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        step_dir = self._step_dir(run_id, step)
        _check_component("result id", result_id)
        for serializer, suffix in _SUFFIXES.items():
            try:
                data = (step_dir / (result_id + suffix)).read_bytes()
            except FileNotFoundError:
                continue
            return _decode_value(data, serializer)
        raise KeyError(f"no result {result_id!r} for step {step!r} of run {run_id!r}")

    def list_results(self, *, run_id: str, step: str) -> list[str]:
        """The result ids stored for one step of one run, in first-save order."""
        step_dir = self._step_dir(run_id, step)
        try:
            lines = (step_dir / _ORDER_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        present = {
            name.rsplit(".", 1)[0]
            for name in os.listdir(step_dir)
            if name.endswith((".json", ".pkl"))
        }
        # dict.fromkeys de-duplicates (two racing first saves) and keeps the first position.
        return [result_id for result_id in dict.fromkeys(lines) if result_id in present]

    def clear_run(self, *, run_id: str) -> int:
        """Delete every result of ``run_id``; returns the number of results deleted."""
        run_dir = self._base / _check_component("run id", run_id)
        if not run_dir.is_dir():
            return 0
        count = sum(
            1
            for _, _, names in os.walk(run_dir)
            for name in names
            if name.endswith((".json", ".pkl"))
        )
        shutil.rmtree(run_dir)
        return count

    def _step_dir(self, run_id: str, step: str) -> Path:
        return self._base / _check_component("run id", run_id) / _check_component("step", step)


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
