"""Shared by the AWS adapters: client settings and the botocore error classification.

botocore is imported inside the functions, never at module import: an adapter only calls
them once it holds a client, by which time botocore is loaded anyway.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from core.errors import ConfigurationError, EngineError, InfrastructureError, RequestRejected

if TYPE_CHECKING:
    from botocore.config import Config

ErrorKind = Literal["unavailable", "configuration", "rejected"]

# Worth retrying later: throttling, server-side failures, and timeouts.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "InternalServerError",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
        "KMS.ThrottlingException",
    }
)

# A wrong name, region, endpoint or credential: retrying cannot help.
_CONFIGURATION_CODES: Final = frozenset(
    {
        "ResourceNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "NoSuchBucket",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "MissingAuthenticationToken",
    }
)

# What to look at when a service rejects a request (``RequestRejected``), per service.
_WHAT_TO_CHECK: Final = {
    "DynamoDB": (
        "the size of what the run stores: an item holds at most 400 KB (a run's input and "
        "output, a step's inline output); lower RELAY_INLINE_OUTPUT_LIMIT and set "
        "RELAY_S3_BUCKET so that large outputs go to S3"
    ),
    "SQS": "the message: at most 1 MiB (a batch too), delayed at most 900 s",
    "S3": "the bucket (RELAY_S3_BUCKET) and the object key",
    "Scheduler": (
        "the schedule: its name, its group (RELAY_SCHEDULER_GROUP), the role "
        "(RELAY_SCHEDULER_ROLE_ARN) and its target"
    ),
}


def client_config(*, max_pool_connections: int = 32, **overrides: Any) -> Config:
    """The botocore settings for Relay's clients: standard retry mode, short timeouts.

    The standard retry mode retries throttling and transient errors a few times with
    backoff before an adapter sees them; what is left becomes ``StoreUnavailable`` /
    ``QueueUnavailable`` for the engine's own retry policy.
    """
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=max_pool_connections,
        **overrides,
    )


# The process's boto3 sessions, one per set of credential variables (tests change them).
_sessions: dict[tuple[str, ...], Any] = {}
_sessions_lock = threading.Lock()
_CREDENTIAL_VARIABLES: Final = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


def new_client(
    service: str,
    *,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    config: Config | None = None,
) -> Any:
    """A boto3 client built from this process's shared boto3 session.

    A session loads botocore's data (endpoints, partitions, retry rules) and resolves
    credentials once; a session per client repeats that, ~40-60 ms per client at cold
    start (``bench/aws_cold_start.py``). boto3 sessions are not thread-safe, so clients
    are created under a lock; the clients themselves are thread-safe.
    """
    import boto3

    key = tuple(os.environ.get(name, "") for name in _CREDENTIAL_VARIABLES)
    with _sessions_lock:
        session: Any = _sessions.get(key)
        if session is None:
            session = _sessions[key] = boto3.session.Session()
        return session.client(
            service,
            region_name=region_name,
            endpoint_url=endpoint_url,
            config=config or client_config(),
        )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (empty for other exceptions)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return ""
    error = response.get("Error")
    if not isinstance(error, Mapping):
        return ""
    return str(error.get("Code", ""))


def classify(exc: BaseException) -> ErrorKind | None:
    """How an exception from a boto3 call should surface, or None if it is not botocore's.

    ``unavailable``: throttled, failing or unreachable (retryable). ``configuration``: a
    missing resource or bad credentials. ``rejected``: any other request the service
    refused (a validation error, an item too large), which ``engine_error`` raises as
    ``RequestRejected``.
    """
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in _UNAVAILABLE_CODES:
            return "unavailable"
        if code in _CONFIGURATION_CODES:
            return "configuration"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return "unavailable" if status >= 500 else "rejected"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return "configuration"
    if isinstance(exc, ConnectionError | HTTPClientError):
        return "unavailable"
    if isinstance(exc, BotoCoreError):
        return "rejected"
    return None


def describe_client(client: Any, service: str) -> dict[str, str]:
    """Backend, service, region and endpoint of a boto3 client, for ``describe()``."""
    meta = client.meta
    return {
        "backend": "aws",
        "service": service,
        "region": str(meta.region_name),
        "endpoint": str(meta.endpoint_url),
    }


def engine_error(
    exc: BaseException, *, service: str, where: str, unavailable: type[InfrastructureError]
) -> EngineError | None:
    """The ``core.errors`` exception for a botocore one; None for any other exception.

    Args:
        exc: What the boto3 call raised.
        service: The service name for the message ("DynamoDB", "SQS", "S3").
        where: The resource, region and endpoint (from ``describe()``).
        unavailable: The retryable class for this port (``StoreUnavailable``...).
    """
    kind = classify(exc)
    if kind is None:
        return None
    if kind == "unavailable":
        return unavailable(f"{service} unavailable ({where}): {exc}")
    if kind == "configuration":
        return ConfigurationError(
            f"{service} refused access or the resource is missing ({where}): {exc}; check "
            "the name, region, endpoint (AWS_ENDPOINT_URL) and credentials"
        )
    operation = getattr(exc, "operation_name", None) or "a request"
    return rejected(service, operation=str(operation), where=where, reason=str(exc))


def rejected(service: str, *, operation: str, where: str, reason: str) -> RequestRejected:
    """The ``RequestRejected`` for a request ``service`` refused, saying what to check.

    Args:
        service: "DynamoDB", "SQS", "S3" or "Scheduler".
        operation: The API call or what it did ("TransactWriteItems", "send 3 messages").
        where: The resource, region and endpoint (from ``describe()``).
        reason: The service's error code and message.
    """
    check = _WHAT_TO_CHECK.get(service, "the request's values and sizes")
    return RequestRejected(
        service=service, operation=f"{operation} on {where}", reason=reason, check=check
    )


@contextlib.contextmanager
def translated(
    *, service: str, where: str, unavailable: type[InfrastructureError]
) -> Iterator[None]:
    """Re-raise botocore exceptions from the block as ``core.errors``, chained."""
    try:
        yield
    except Exception as exc:
        error = engine_error(exc, service=service, where=where, unavailable=unavailable)
        if error is None:
            raise
        raise error from exc


def where(description: Mapping[str, str], resource: str) -> str:
    """``describe()`` as one phrase for error messages: resource, region, endpoint."""
    return (
        f"{resource} {description.get(resource, '?')!r} in {description.get('region', '?')} "
        f"at {description.get('endpoint', '?')}"
    )
