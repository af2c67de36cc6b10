"""Creating the DynamoDB state table (tests; users without Terraform).

Terraform's ``dynamodb.tf`` declares the same layout in a deployment: keys ``pk``/``sk``,
the ``by_saga`` and ``by_status`` indexes ``DynamoDBStateStore`` queries, TTL on
``expires_at``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from core.errors import ConfigurationError
from infra.aws import _dynamodb_items as items
from infra.aws._boto import classify, error_code

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BY_SAGA_INDEX: Final = "by_saga"
BY_STATUS_INDEX: Final = "by_status"


def create_table(
    client: DynamoDBClient, *, table_name: str, is_ttl_enabled: bool = True, exist_ok: bool = False
) -> None:
    """Create the table ``DynamoDBStateStore`` expects (tests; users without Terraform).

    On-demand billing, the ``by_saga`` and ``by_status`` indexes (all attributes
    projected: headers are written only when a run changes status, so the index writes
    stay rare) and TTL on ``expires_at``. Terraform's ``state_tables`` module declares the
    same layout.

    Raises:
        ConfigurationError: the table exists (unless ``exist_ok``) or AWS refused.
    """
    names = ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")
    try:
        client.create_table(
            TableName=table_name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in names],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": index,
                    "KeySchema": [
                        {"AttributeName": hash_key, "KeyType": "HASH"},
                        {"AttributeName": range_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index, hash_key, range_key in (
                    (BY_SAGA_INDEX, "gsi1pk", "gsi1sk"),
                    (BY_STATUS_INDEX, "gsi2pk", "gsi2sk"),
                )
            ],
        )
    except Exception as exc:
        if exist_ok and error_code(exc) == "ResourceInUseException":
            return
        if classify(exc) is None:
            raise
        raise ConfigurationError(f"cannot create DynamoDB table {table_name!r}: {exc}") from exc
    client.get_waiter("table_exists").wait(TableName=table_name)
    if is_ttl_enabled:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": items.TTL_ATTRIBUTE},
        )
