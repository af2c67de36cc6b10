"""The embedded backend's API keys: the ``api_keys`` table of ``relay.db`` (schema 4)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from core.ports.api_keys import ApiKeyRecord, DuplicateApiKeyError
from infra.local.sqlite_db import SQLiteDatabase

_COLUMNS: Final = "key_id, secret_sha256, grants, description, created_at, revoked_at"
_INSERT: Final = (
    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key_id) DO NOTHING"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?"
_SELECT_ALL: Final = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id"
_REVOKE: Final = "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL"


class SQLiteApiKeyStore:
    """An ``ApiKeyStore`` in the local SQLite file the state store uses.

    Args:
        database: The open database (its schema, version 4 or later, has the table).
    """

    def __init__(self, database: SQLiteDatabase) -> None:
        self._db = database

    @classmethod
    def from_settings(cls, data_dir: Path) -> SQLiteApiKeyStore:
        """A store on ``<data_dir>/relay.db``, created if missing."""
        return cls(SQLiteDatabase.from_settings(data_dir))

    @property
    def database(self) -> SQLiteDatabase:
        """The database this store uses; close it when done."""
        return self._db

    def describe(self) -> Mapping[str, str]:
        """The database file, for logs and errors."""
        return self._db.describe()

    def create_key(self, *, record: ApiKeyRecord) -> None:
        """Store ``record`` unless its key id exists.

        Raises:
            DuplicateApiKeyError: a key with this id exists; nothing was written.
        """
        row = (
            record.key_id,
            record.secret_sha256,
            record.grants,
            record.description,
            record.created_at,
            record.revoked_at,
        )

        def create_txn(conn: sqlite3.Connection) -> bool:
            return conn.execute(_INSERT, row).rowcount == 1

        if not self._db.run_write(create_txn, durable=True):
            raise DuplicateApiKeyError(record.key_id)

    def load_key(self, *, key_id: str) -> ApiKeyRecord | None:
        """The key named ``key_id``; None when there is none."""
        with self._db.read_transaction() as conn:
            row = conn.execute(_SELECT, (key_id,)).fetchone()
        return None if row is None else _record(row)

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first (ties by key id)."""
        with self._db.read_transaction() as conn:
            rows = conn.execute(_SELECT_ALL).fetchall()
        return [_record(row) for row in rows]

    def revoke_key(self, *, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked at ``now``, keeping an earlier revocation."""

        def revoke_txn(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            conn.execute(_REVOKE, (now, key_id))
            row = conn.execute(_SELECT, (key_id,)).fetchone()
            return None if row is None else _record(row)

        return self._db.run_write(revoke_txn, durable=True)


def _record(row: tuple[Any, ...]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row[0],
        secret_sha256=row[1],
        grants=row[2],
        description=row[3],
        created_at=row[4],
        revoked_at=row[5],
    )
