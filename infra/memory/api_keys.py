"""An in-process ``ApiKeyStore`` for tests and the memory backend: a dict behind a lock."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping

from core.ports.api_keys import ApiKeyRecord, DuplicateApiKeyError


class MemoryApiKeyStore:
    """An ``ApiKeyStore`` in process memory; nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, ApiKeyRecord] = {}

    def describe(self) -> Mapping[str, str]:
        """Names the backend; there is no location to report."""
        return {"backend": "memory"}

    def create_key(self, *, record: ApiKeyRecord) -> None:
        """Store ``record`` unless its key id exists.

        Raises:
            DuplicateApiKeyError: a key with this id exists; nothing was written.
        """
        with self._lock:
            if record.key_id in self._keys:
                raise DuplicateApiKeyError(record.key_id)
            self._keys[record.key_id] = record

    def load_key(self, *, key_id: str) -> ApiKeyRecord | None:
        """The key named ``key_id``; None when there is none."""
        with self._lock:
            return self._keys.get(key_id)

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first (ties by key id)."""
        with self._lock:
            return sorted(self._keys.values(), key=lambda r: (r.created_at, r.key_id))

    def revoke_key(self, *, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked at ``now``, keeping an earlier revocation."""
        with self._lock:
            record = self._keys.get(key_id)
            if record is None or record.is_revoked:
                return record
            revoked = dataclasses.replace(record, revoked_at=now)
            self._keys[key_id] = revoked
            return revoked
