"""API keys in Firestore: one document per key in their own collection.

Layout: ``<collection>/<key id>`` with the ``ApiKeyRecord`` fields as document fields
(the secret's sha256 only, never the secret). ``create`` with its must-not-exist
precondition makes a key id name one key forever; revocation is a transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from core.ports.api_keys import ApiKeyRecord, DuplicateApiKeyError
from infra.gcp._errors import google_errors

if TYPE_CHECKING:
    from google.cloud.firestore_v1.client import Client
    from google.cloud.firestore_v1.transaction import Transaction

DEFAULT_API_KEYS_COLLECTION: Final = "relay_api_keys"


class FirestoreApiKeyStore:
    """An ``ApiKeyStore`` in a Firestore collection.

    Args:
        client: A ``google.cloud.firestore.Client`` (``FIRESTORE_EMULATOR_HOST`` points
            it at the emulator).
        collection: The collection of key documents.
    """

    def __init__(self, client: Client, *, collection: str = DEFAULT_API_KEYS_COLLECTION) -> None:
        self._client = client
        self._collection = collection
        self._keys = client.collection(collection)

    @classmethod
    def from_settings(
        cls,
        *,
        project: str | None = None,
        database: str | None = None,
        collection: str = DEFAULT_API_KEYS_COLLECTION,
    ) -> FirestoreApiKeyStore:
        """A store on ``database`` of ``project`` with Application Default Credentials."""
        from google.cloud import firestore

        return cls(firestore.Client(project=project, database=database), collection=collection)

    def describe(self) -> Mapping[str, str]:
        """Project, database, collection and endpoint, for logs and errors."""
        emulator = getattr(self._client, "_emulator_host", None)
        return {
            "backend": "firestore",
            "project": str(self._client.project),
            "database": str(getattr(self._client, "_database", "(default)")),
            "collection": self._collection,
            "endpoint": f"emulator {emulator}" if emulator else "firestore.googleapis.com",
        }

    def create_key(self, *, record: ApiKeyRecord) -> None:
        """Store ``record`` unless its key id exists.

        Raises:
            DuplicateApiKeyError: a key with this id exists; nothing was written.
            StoreUnavailable: Firestore stayed unreachable.
        """
        from google.api_core.exceptions import AlreadyExists, Conflict

        with google_errors(f"create API key {record.key_id!r}", self.describe()):
            try:
                self._keys.document(record.key_id).create(_document(record))
            except (AlreadyExists, Conflict):
                raise DuplicateApiKeyError(record.key_id) from None

    def load_key(self, *, key_id: str) -> ApiKeyRecord | None:
        """The key named ``key_id``; None when there is none."""
        if not _is_document_id(key_id):
            return None
        with google_errors(f"load API key {key_id!r}", self.describe()):
            snapshot = self._keys.document(key_id).get()
        return _record(snapshot.to_dict()) if snapshot.exists else None

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first (ties by key id)."""
        with google_errors("list API keys", self.describe()):
            records = [_record(s.to_dict() or {}) for s in self._keys.stream()]
        return sorted(records, key=lambda r: (r.created_at, r.key_id))

    def revoke_key(self, *, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked at ``now``, keeping an earlier revocation (a transaction)."""
        from google.cloud import firestore

        if not _is_document_id(key_id):
            return None
        ref = self._keys.document(key_id)

        @firestore.transactional
        def revoke_txn(transaction: Transaction) -> ApiKeyRecord | None:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return None
            record = _record(snapshot.to_dict())
            if record.is_revoked:
                return record
            transaction.update(ref, {"revoked_at": float(now)})
            return _record({**(snapshot.to_dict() or {}), "revoked_at": float(now)})

        with google_errors(f"revoke API key {key_id!r}", self.describe()):
            result: ApiKeyRecord | None = revoke_txn(self._client.transaction())
        return result


def _is_document_id(key_id: str) -> bool:
    # Lookups come from request headers: refuse what cannot be a key id before Firestore
    # sees it (a "/" would name a subcollection, "" the collection).
    return key_id.isascii() and key_id.isalnum() and 0 < len(key_id) <= 64


def _document(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": record.key_id,
        "secret_sha256": record.secret_sha256,
        "grants": record.grants,
        "description": record.description,
        "created_at": float(record.created_at),
        "revoked_at": None if record.revoked_at is None else float(record.revoked_at),
    }


def _record(doc: Mapping[str, Any] | None) -> ApiKeyRecord:
    doc = doc or {}
    revoked_at = doc.get("revoked_at")
    return ApiKeyRecord(
        key_id=str(doc["key_id"]),
        secret_sha256=str(doc["secret_sha256"]),
        grants=str(doc["grants"]),
        description=str(doc.get("description") or ""),
        created_at=float(doc["created_at"]),
        revoked_at=None if revoked_at is None else float(revoked_at),
    )
