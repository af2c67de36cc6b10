"""Step outputs too large to keep inline, as files under a base directory.

Layout: ``<base>/<run_id>/<step>/<result_id>.json`` (or ``.pkl`` when the caller asked
for pickle), plus one ``_order`` file per step listing result ids in first-save order.
Directories are 0700 and files 0600 (``mkstemp`` creates them so): outputs are run data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from core.ports.io_codec import SUFFIXES, check_key_component, decode_value, encode_value
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
        check_key_component("result id", result_id)
        data = encode_value(value, serializer, f"{run_id}/{step}/{result_id}")
        make_private_dirs(step_dir)
        target = step_dir / (result_id + SUFFIXES[serializer])
        other = step_dir / (result_id + SUFFIXES["pickle" if serializer == "json" else "json"])
        if not target.exists() and not other.exists():
            # Record the order before the file exists: a crash in between leaves an id
            # that list_results skips, never a result missing from the order.
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            with os.fdopen(os.open(step_dir / _ORDER_FILE, flags, 0o600), "a") as order:
                order.write(result_id + "\n")
        _write_atomically(target, data)
        other.unlink(missing_ok=True)
        return target.as_uri()

    def load(self, *, run_id: str, step: str, result_id: str) -> Any:
        """Return the stored value; raises ``KeyError`` when there is none."""
        step_dir = self._step_dir(run_id, step)
        check_key_component("result id", result_id)
        for serializer, suffix in SUFFIXES.items():
            try:
                data = (step_dir / (result_id + suffix)).read_bytes()
            except FileNotFoundError:
                continue
            return decode_value(data, serializer)
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
        run_dir = self._base / check_key_component("run id", run_id)
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
        return (
            self._base / check_key_component("run id", run_id) / check_key_component("step", step)
        )


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
