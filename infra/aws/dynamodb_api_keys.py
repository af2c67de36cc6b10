"""API keys in DynamoDB: items in the state store's table, beside the runs.

Layout: ``pk = "APIKEY#<key id>"``, ``sk = "KEY"``, the ``ApiKeyRecord`` fields as
attributes (the secret's sha256 only). ``gsi1pk = "APIKEYS"`` with ``gsi1sk`` the creation
order puts every key in one partition of the ``by_saga`` index (runs use ``SAGA#<name>``
there), so listing keys is one query, never a scan of the runs. Keys carry no
``gsi2pk``, so they never appear in the by-status index the run listings read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from core.errors import StoreUnavailable
from core.ports.api_keys import ApiKeyRecord, DuplicateApiKeyError
from infra.aws import _dynamodb_items as items
from infra.aws._boto import describe_client, error_code, new_client, translated, where
from infra.aws.dynamodb_provisioning import BY_SAGA_INDEX

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

KEY_PREFIX: Final = "APIKEY#"
KEY_SK: Final = "KEY"
KEYS_PARTITION: Final = "APIKEYS"


class DynamoDBApiKeyStore:
    """An ``ApiKeyStore`` in the state store's DynamoDB table.

    Args:
        client: A boto3 DynamoDB client.
        table_name: The table of ``DynamoDBStateStore`` (``create_table``'s layout).
    """

    def __init__(self, client: DynamoDBClient, *, table_name: str) -> None:
        self._client = client
        self._table = table_name

    @classmethod
    def from_settings(cls, *, table_name: str) -> DynamoDBApiKeyStore:
        """A store with its own client; ``AWS_ENDPOINT_URL`` and the usual AWS variables apply."""
        return cls(new_client("dynamodb"), table_name=table_name)

    def describe(self) -> Mapping[str, str]:
        """Region, endpoint and table, for logs and errors."""
        return {**describe_client(self._client, "dynamodb"), "table": self._table}

    def _translated(self) -> Any:
        return translated(
            service="DynamoDB", where=where(self.describe(), "table"), unavailable=StoreUnavailable
        )

    def create_key(self, *, record: ApiKeyRecord) -> None:
        """Store ``record`` unless its key id exists (a conditional put).

        Raises:
            DuplicateApiKeyError: a key with this id exists; nothing was written.
        """
        with self._translated():
            try:
                self._client.put_item(
                    TableName=self._table, Item=_item(record), ConditionExpression=items.INSERT
                )
            except Exception as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise DuplicateApiKeyError(record.key_id) from None
                raise

    def load_key(self, *, key_id: str) -> ApiKeyRecord | None:
        """The key named ``key_id``; None when there is none (a consistent read)."""
        if not key_id:
            return None
        with self._translated():
            response = self._client.get_item(
                TableName=self._table, Key=_key(key_id), ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else _record(item)

    def list_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first (one query of the keys' index partition)."""
        found: list[ApiKeyRecord] = []
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": BY_SAGA_INDEX,
                "KeyConditionExpression": "gsi1pk = :keys",
                "ExpressionAttributeValues": {":keys": {"S": KEYS_PARTITION}},
            }
            if start:
                params["ExclusiveStartKey"] = start
            with self._translated():
                page = self._client.query(**params)
            found += [_record(item) for item in page.get("Items", [])]
            start = page.get("LastEvaluatedKey")
            if not start:
                return sorted(found, key=lambda r: (r.created_at, r.key_id))

    def revoke_key(self, *, key_id: str, now: float) -> ApiKeyRecord | None:
        """Mark the key revoked at ``now``, keeping an earlier revocation."""
        if not key_id:
            return None
        with self._translated():
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=_key(key_id),
                    UpdateExpression="SET revoked_at = :now",
                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(revoked_at)",
                    ExpressionAttributeValues={":now": items.number(now)},
                )
            except Exception as exc:
                # No such key, or revoked before: the first revocation time stays.
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
        return self.load_key(key_id=key_id)


def _key(key_id: str) -> dict[str, AttributeValueTypeDef]:
    return {"pk": {"S": KEY_PREFIX + key_id}, "sk": {"S": KEY_SK}}


def _item(record: ApiKeyRecord) -> dict[str, AttributeValueTypeDef]:
    item: dict[str, AttributeValueTypeDef] = {
        **_key(record.key_id),
        "key_id": {"S": record.key_id},
        "secret_sha256": {"S": record.secret_sha256},
        "grants": {"S": record.grants},
        "description": {"S": record.description},
        "created_at": items.number(record.created_at),
        "gsi1pk": {"S": KEYS_PARTITION},
        "gsi1sk": {"S": items.order_key(record.created_at, record.key_id)},
    }
    items.set_optional(item, "revoked_at", record.revoked_at)
    return item


def _record(item: Mapping[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=item["key_id"]["S"],
        secret_sha256=item["secret_sha256"]["S"],
        grants=item["grants"]["S"],
        description=item["description"]["S"],
        created_at=float(item["created_at"]["N"]),
        revoked_at=items.read_number(item, "revoked_at"),
    )
