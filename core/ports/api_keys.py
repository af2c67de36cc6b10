"""The API key store port: scoped keys of the run API, stored by digest only.

A key's text is ``rk_<key_id>_<secret>``; the store keeps the key id, the sha256 of the
secret, the key's grants (``saga:start,read;other:read``, parsed by the HTTP app), a
description and when it was created and revoked. The secret itself is shown once, by
``relay keys create``, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from core.errors import EngineError

KEY_PREFIX: Final = "rk_"
_KEY_TEXT: Final = re.compile(r"rk_([a-z0-9]{12})_([A-Za-z0-9_-]{32,128})")
KEY_ID_PATTERN: Final = re.compile(r"[a-z0-9]{12}")


class DuplicateApiKeyError(EngineError):
    """Raised when a key is created with the id of a stored key (nothing is written)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"an API key with id {key_id!r} exists; issue a new key")
        self.key_id = key_id


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One stored API key.

    Attributes:
        key_id: The public part of the key, its name in listings.
        secret_sha256: Hex sha256 of the secret part; the secret is never stored.
        grants: What the key may do, in the grant syntax (``order:start,read;*:read``).
        description: Free text given at creation.
        created_at: Epoch seconds.
        revoked_at: Epoch seconds of the revocation; None while the key is valid.
    """

    key_id: str
    secret_sha256: str
    grants: str
    description: str
    created_at: float
    revoked_at: float | None = None

    @property
    def is_revoked(self) -> bool:
        """True once the key was revoked: it authenticates nobody."""
        return self.revoked_at is not None

    def matches(self, secret: str) -> bool:
        """True when ``secret`` hashes to the stored digest (constant-time comparison)."""
        return hmac.compare_digest(secret_digest(secret), self.secret_sha256)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: its text (shown once) and the record to store."""

    text: str
    record: ApiKeyRecord


def secret_digest(secret: str) -> str:
    """The hex sha256 of a key's secret part, as stored."""
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def issue_key(*, grants: str, description: str, now: float) -> IssuedKey:
    """A fresh random key with its record (the caller stores the record, shows the text)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        key_id=key_id,
        secret_sha256=secret_digest(secret),
        grants=grants,
        description=description,
        created_at=now,
    )
    return IssuedKey(text=f"{KEY_PREFIX}{key_id}_{secret}", record=record)


def split_key_text(text: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a key's text; None when it is not shaped like a key."""
    match = _KEY_TEXT.fullmatch(text)
    return None if match is None else (match.group(1), match.group(2))


class ApiKeyStore(Protocol):
    """Durable API keys (enforced by ``tests/contract/test_api_key_store.py`` per adapter).

    Contract:

    * ``create_key`` stores a new record, or raises ``DuplicateApiKeyError`` (writing
      nothing) when the key id exists: a key id names one key forever.
    * ``load_key`` is strongly consistent with earlier writes of the same process, so a
      key revoked here is refused by the next request.
    * ``revoke_key`` sets ``revoked_at`` once: revoking again keeps the first time.
    * ``list_keys`` returns every key, revoked ones included, oldest first.
    * Unreachable or throttling backends raise ``core.errors.StoreUnavailable``.
    """

    def create_key(self, *, record: ApiKeyRecord) -> None:
        """Store ``record`` unless its key id exists.

        Raises:
            DuplicateApiKeyError: a key with this id exists; nothing was written.
        """
        ...

    def load_key(self, *, key_id: str) -> ApiKeyRecord | None:
        """The key named ``key_id``; None when there is none."""
        ...

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first."""
        ...

    def revoke_key(self, *, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked at ``now`` (kept when already revoked).

        Returns:
            The key as stored afterwards; None when there is no such key.
        """
        ...

    def describe(self) -> Mapping[str, str]:
        """Where this store points (path, project, table, endpoint) for logs and errors."""
        ...
