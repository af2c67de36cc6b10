"""The nonces of accepted signatures, shared by every local process of one data dir.

``relay dev`` serves the admin routes and its workers (separate processes) serve them
too, so a per-process memory would let a captured signed request be replayed once to
each process within the signature window. ``SQLiteNonceStore`` keeps the nonces in
``<data dir>/nonces.db`` (0600, a file of its own so the state database's schema and
migrations are untouched): the first process to insert a nonce wins, any later
presentation of it, to whichever process, is a replay (issue 10, finding 3).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Final

from core.errors import StoreUnavailable
from core.signing import DEFAULT_NONCE_CAPACITY, SignatureError, replayed
from infra.local.private_files import ensure_private_dir, ensure_private_file

NONCES_FILE_NAME: Final = "nonces.db"
_PRUNE_EVERY: Final = 256
"""Expired rows are deleted, and the size checked, once per this many inserts."""


class SQLiteNonceStore:
    """A ``core.signing.NonceStore`` in a SQLite file, safe across threads and processes.

    Args:
        path: The database file; created 0600 (with its directory 0700) if missing.
        capacity: Most live nonces kept; beyond it new signatures are refused.
        busy_timeout_seconds: How long to wait for another process's write lock.
    """

    def __init__(
        self,
        path: Path,
        *,
        capacity: int = DEFAULT_NONCE_CAPACITY,
        busy_timeout_seconds: float = 5.0,
    ) -> None:
        ensure_private_dir(path.parent)
        ensure_private_file(path)
        self._path = path
        self._capacity = capacity
        self._lock = threading.Lock()
        # Rows counted at the last prune plus this process's inserts since (other processes'
        # inserts show up at the next prune, at most _PRUNE_EVERY inserts later).
        self._known_count = 0
        self._inserts_since_prune = _PRUNE_EVERY  # prune (and count) on first use
        # One connection, used under the lock by whichever thread verifies.
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_seconds
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # A nonce lost to a power cut matters for at most the 60 s window after it.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS nonces"
                " (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires_at)")
        except sqlite3.Error as exc:
            self._conn.close()
            raise self._unavailable(exc) from exc

    @classmethod
    def from_settings(cls, data_dir: Path) -> SQLiteNonceStore:
        """The store of ``<data_dir>/nonces.db``."""
        return cls(data_dir / NONCES_FILE_NAME)

    def __repr__(self) -> str:
        return f"SQLiteNonceStore({str(self._path)!r})"

    def remember(self, nonce: str, *, expires_at: float, now: float) -> None:
        """Record ``nonce`` until ``expires_at``; the first process to do so wins.

        Raises:
            SignatureError: the nonce was recorded before (a replay), or the store is full.
            StoreUnavailable: the file stayed locked or failed (503: retried, never let in).
        """
        with self._lock:
            try:
                if self._inserts_since_prune >= _PRUNE_EVERY or self._known_count >= self._capacity:
                    self._prune_locked(now)
                if self._known_count >= self._capacity:
                    raise SignatureError("too many signed requests in the signature window")
                self._conn.execute(
                    "INSERT INTO nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires_at)
                )
            except sqlite3.IntegrityError:
                raise replayed() from None
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            self._known_count += 1
            self._inserts_since_prune += 1

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _prune_locked(self, now: float) -> None:
        self._conn.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
        (self._known_count,) = self._conn.execute("SELECT count(*) FROM nonces").fetchone()
        self._inserts_since_prune = 0

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"nonce store {self._path} failed: {exc}")
