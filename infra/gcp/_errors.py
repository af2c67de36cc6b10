"""Translation of Google client-library errors into ``core.errors``, shared by the adapters.

Only this package sees ``google.api_core`` / ``google.auth`` exceptions: every SDK call of
an adapter runs inside :func:`google_errors`, which re-raises the most specific engine
error with the original chained.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from core.errors import ConfigurationError, RequestRejected, StoreUnavailable


@functools.cache
def vendor_errors() -> tuple[type[BaseException], ...]:
    """The exception types Google client libraries raise (imported on first failure)."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    errors: list[type[BaseException]] = [
        api_exceptions.GoogleAPICallError,
        api_exceptions.RetryError,
        auth_exceptions.GoogleAuthError,
    ]
    try:  # google-cloud-storage talks HTTP through requests; Firestore uses gRPC.
        import requests

        errors.append(requests.RequestException)
    except ImportError:  # pragma: no cover - requests comes with google-auth's transport
        pass
    return tuple(errors)


# Per ``describe()["backend"]``: the service's name, and what to check when it rejects a
# request as invalid.
_REJECTION_HINTS: Final = {
    "firestore": (
        "Firestore",
        "the size of what the run stores: a document holds at most 1 MiB (a run's input "
        "and output, a step's inline output); lower RELAY_INLINE_OUTPUT_LIMIT and set "
        "RELAY_GCS_BUCKET so that large outputs go to Cloud Storage",
    ),
    "gcs": ("Cloud Storage", "the bucket (RELAY_GCS_BUCKET) and the object name"),
}
_DEFAULT_HINT: Final = ("Google Cloud", "the request's values and sizes")


def transient_errors() -> tuple[type[Exception], ...]:
    """Google API errors worth retrying: the service was busy, unreachable or too slow."""
    from google.api_core import exceptions as api_exceptions

    return (
        api_exceptions.ServiceUnavailable,
        api_exceptions.DeadlineExceeded,
        api_exceptions.InternalServerError,
        api_exceptions.TooManyRequests,  # ResourceExhausted over gRPC
        api_exceptions.Aborted,
        api_exceptions.GatewayTimeout,
        api_exceptions.Unknown,
    )


def translate(exc: BaseException, *, action: str, where: Mapping[str, str]) -> Exception:
    """The engine error for a Google client error raised while doing ``action``.

    * access denied, missing database/bucket, missing index, no credentials →
      ``ConfigurationError`` (retrying cannot help; the message says what to check);
    * a request the service rejects as invalid (a document over 1 MiB, a commit over its
      size or write limits) → ``RequestRejected``, as the AWS adapters raise for theirs;
    * everything else (unavailable, deadline, throttled, aborted, network) →
      ``StoreUnavailable``, which is retryable.
    """
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    location = ", ".join(f"{key}={value}" for key, value in where.items())
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, api_exceptions.Forbidden | api_exceptions.Unauthorized):
        return ConfigurationError(
            f"{action} was denied ({detail}); check the credentials and IAM roles for {location}"
        )
    if isinstance(exc, auth_exceptions.DefaultCredentialsError | auth_exceptions.RefreshError):
        return ConfigurationError(
            f"{action}: no usable Google credentials ({detail}); set up Application Default "
            f"Credentials or point the emulator variables at an emulator ({location})"
        )
    if isinstance(exc, api_exceptions.NotFound):
        return ConfigurationError(f"{action}: not found ({detail}); check that {location} exists")
    if isinstance(exc, api_exceptions.FailedPrecondition):
        return ConfigurationError(
            f"{action} needs a resource that is not ready ({detail}); for Firestore queries "
            f"deploy infra/gcp/firestore.indexes.json ({location})"
        )
    if isinstance(exc, api_exceptions.BadRequest):  # InvalidArgument and friends
        service, check = _REJECTION_HINTS.get(where.get("backend", ""), _DEFAULT_HINT)
        return RequestRejected(
            service=service, operation=f"{action} ({location})", reason=detail, check=check
        )
    return StoreUnavailable(f"{action} failed ({detail}); {location}")


@contextmanager
def google_errors(action: str, where: Mapping[str, str]) -> Iterator[None]:
    """Run SDK calls, re-raising Google client errors as engine errors (chained)."""
    try:
        yield
    except vendor_errors() as exc:
        raise translate(exc, action=action, where=where) from exc
