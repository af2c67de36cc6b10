"""The embedded backend's files are private: data dir 0700, database, outputs and key 0600.

Issue 10, finding 7: ``relay.db`` was 0644 and the data dir 0755 though they hold tokens
and emails; an existing ``signing.key`` was trusted whatever its mode. Every test runs
under umask 000, so the modes come from the code, not from the environment.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from functions.settings import KEY_FILE_NAME, Settings
from infra.local.fs_io_manager import FilesystemIOManager
from infra.local.sqlite_db import SQLiteDatabase


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """Umask 000: whatever is private below is private because the code made it so."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_its_wal_files_are_0600_in_a_0700_data_dir(tmp_path: Path) -> None:
    """A fresh data dir is 0700; relay.db, -wal and -shm are 0600 after a write."""
    data_dir = tmp_path / "data"
    database = SQLiteDatabase.from_settings(data_dir)
    try:
        with database.write_transaction(durable=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
        files = sorted(p.name for p in data_dir.iterdir() if p.name.startswith("relay.db"))
        assert "relay.db-wal" in files
        assert {name: mode(data_dir / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        database.close()
    assert mode(data_dir) == 0o700


def test_existing_open_files_of_ours_are_tightened(tmp_path: Path) -> None:
    """A data dir and database left 0755/0644 by an older Relay are made private."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
        (data_dir / name).touch(mode=0o644)

    SQLiteDatabase.from_settings(data_dir).close()

    assert mode(data_dir) == 0o700
    # SQLite removes -wal and -shm when the last connection closes; what is left is 0600.
    left = [p for p in data_dir.iterdir() if p.name.startswith("relay.db")]
    assert {p.name: mode(p) for p in left} == {p.name: 0o600 for p in left}
    assert "relay.db" in {p.name for p in left}


def test_outputs_are_0600_in_0700_directories(tmp_path: Path) -> None:
    """Large step outputs, their order file and their directories are private."""
    manager = FilesystemIOManager.from_settings(tmp_path / "data")

    uri = manager.save(run_id="r-1", step="s", result_id="out", value={"token": "tok_1"})

    stored = Path(uri.removeprefix("file://"))
    assert mode(stored) == 0o600
    assert mode(stored.parent / "_order") == 0o600
    for directory in (stored.parent, stored.parent.parent, tmp_path / "data" / "outputs"):
        assert mode(directory) == 0o700, directory


def test_signing_key_is_created_0600(tmp_path: Path) -> None:
    """The generated key file is readable by its owner only."""
    settings = Settings(data_dir=tmp_path / "data")

    key = settings.signing_key_bytes()

    path = tmp_path / "data" / KEY_FILE_NAME
    assert path.read_bytes() == key
    assert mode(path) == 0o600
    assert mode(tmp_path / "data") == 0o700
    assert settings.signing_key_bytes() == key  # read back, accepted


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o700])
def test_existing_key_open_to_others_is_refused_naming_the_fix(
    tmp_path: Path, file_mode: int
) -> None:
    """A key file group or others may access is refused: the message says chmod 600."""
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(b"k" * 64)
    path.chmod(file_mode)

    if file_mode & 0o077:
        with pytest.raises(ConfigurationError) as caught:
            Settings(data_dir=tmp_path).signing_key_bytes()
        assert str(path) in str(caught.value)
        assert f"chmod 600 {path}" in str(caught.value)
    else:
        assert Settings(data_dir=tmp_path).signing_key_bytes() == b"k" * 64


@pytest.mark.parametrize("file_mode", [0o600, 0o400])
def test_existing_private_key_is_used(tmp_path: Path, file_mode: int) -> None:
    """A key file only its owner can read is accepted as it is."""
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(b"secret-key\n")
    path.chmod(file_mode)

    assert Settings(data_dir=tmp_path).signing_key_bytes() == b"secret-key"


def test_key_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    """A symlink could point anywhere (another user's file): refused, naming the path."""
    target = tmp_path / "elsewhere.key"
    target.write_bytes(b"k" * 64)
    target.chmod(0o600)
    (tmp_path / KEY_FILE_NAME).symlink_to(target)

    with pytest.raises(ConfigurationError, match="symbolic link"):
        Settings(data_dir=tmp_path).signing_key_bytes()


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """Anything but a regular file is refused."""
    (tmp_path / KEY_FILE_NAME).mkdir(mode=0o700)

    with pytest.raises(ConfigurationError, match="regular file"):
        Settings(data_dir=tmp_path).signing_key_bytes()


def test_explicit_key_skips_the_file(tmp_path: Path) -> None:
    """RELAY_SIGNING_KEY wins; no file is read or written."""
    assert Settings(data_dir=tmp_path, signing_key="abc").signing_key_bytes() == b"abc"
    assert not (tmp_path / KEY_FILE_NAME).exists()
