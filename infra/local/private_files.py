"""Files of the embedded backend that only their owner may read: data dir, database, key.

The data dir holds run input and output (tokens, emails) and the signing key, so it is
created 0700 and its files 0600 whatever the umask (issue 10, finding 7). A directory or
file that already exists is tightened when it is ours; one owned by someone else is left
alone (it is not ours to change), except the signing key, which is refused
(``read_private_key``): a key another user can read or replace signs deliveries for them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Final

from core.errors import ConfigurationError

log = logging.getLogger("relay.files")

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
_OTHERS: Final = stat.S_IRWXG | stat.S_IRWXO


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; tighten it if it is ours.

    Returns:
        ``path``.
    """
    make_private_dirs(path)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every directory created is 0700; existing ones are left alone.

    ``Path.mkdir(parents=True)`` would give the parents it creates the default mode.
    """
    missing: list[Path] = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            directory.mkdir(mode=PRIVATE_DIR_MODE)


def ensure_private_file(path: Path | str) -> None:
    """Create ``path`` empty with mode 0600 if missing; tighten it to 0600 if it is ours."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.getuid() and info.st_mode & _OTHERS:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def tighten_if_present(path: Path | str) -> None:
    """Tighten an existing file of ours to 0600 (SQLite's ``-wal``/``-shm`` of older runs)."""
    with contextlib.suppress(FileNotFoundError):
        _tighten(Path(path), PRIVATE_FILE_MODE)


def write_private_key(path: Path, key: bytes) -> bool:
    """Create ``path`` holding ``key``, mode 0600, unless it exists.

    The key is written to a private temporary file that is then hard-linked into place,
    so no reader ever sees the file empty or half-written.

    Returns:
        False when another process created it first (read theirs).
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # mkstemp's 0600, made explicit
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def read_private_key(path: Path) -> bytes:
    """The stripped contents of key file ``path``, if only its owner (us) can use it.

    Raises:
        FileNotFoundError: there is no such file.
        ConfigurationError: the file is not a regular file owned by the current user,
            or its group or others have any access; the message names the path and fix.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a symlink is refused
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ConfigurationError(
            f"signing key file {path} is a symbolic link; replace it with the key file "
            "itself (mode 0600), or set RELAY_SIGNING_KEY"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise ConfigurationError(
                f"signing key file {path} is not a regular file owned by this user "
                f"(uid {os.getuid()}); delete it to have a new key generated, or set "
                "RELAY_SIGNING_KEY"
            )
        if info.st_mode & _OTHERS:
            raise ConfigurationError(
                f"signing key file {path} is accessible to group or others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}` (or delete it to "
                "have a new key generated)"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read().strip()
    finally:
        os.close(fd)


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_uid != os.getuid():
        if info.st_mode & stat.S_IRWXO:
            log.warning("%s is not owned by this user and others may access it", path)
        return
    if info.st_mode & _OTHERS:
        os.chmod(path, mode)
