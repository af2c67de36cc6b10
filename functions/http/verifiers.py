"""The delivery verifier for the configured backend: HMAC locally, OIDC on GCP, none on AWS.

On GCP each authenticated route has its own principals (``functions.http.oidc.RoutePrincipals``):
Cloud Tasks' account for steps, the scheduler's for schedules and the sweep, Pub/Sub push's
for events, and ``RELAY_OPERATOR_EMAILS`` for retry and cancel.
"""

from __future__ import annotations

from core.errors import ConfigurationError
from functions.http.auth import DeliveryVerifier, HmacVerifier
from functions.settings import Settings


def verifier_for(settings: Settings) -> DeliveryVerifier:
    """The verifier that matches how deliveries reach this backend.

    Raises:
        ConfigurationError: the backend's verifier lacks configuration (naming the
            variable), or the backend has no HTTP deliveries to verify.
    """
    if settings.backend == "memory":
        return HmacVerifier(settings.signing_key_bytes())
    if settings.backend == "local":
        from infra.local.sqlite_nonces import SQLiteNonceStore

        # Shared by relay dev and its workers: a replay to another process is refused too.
        nonces = SQLiteNonceStore.from_settings(settings.data_dir)
        return HmacVerifier(settings.signing_key_bytes(), nonces=nonces)
    if settings.backend == "gcp":
        from functions.http.oidc import GOOGLE_CERTS_URL, OidcVerifier, RoutePrincipals

        audience = settings.tasks_audience or settings.worker_url
        if not audience:
            raise ConfigurationError(
                "RELAY_BACKEND='gcp' verifies OIDC tokens for an audience: set "
                "RELAY_TASKS_AUDIENCE (or RELAY_WORKER_URL, its default)"
            )
        if not settings.tasks_service_account:
            raise ConfigurationError(
                "RELAY_BACKEND='gcp' accepts deliveries from one service account: set "
                "RELAY_TASKS_SERVICE_ACCOUNT to the email Cloud Tasks signs tokens as"
            )
        principals = RoutePrincipals(
            tasks=settings.tasks_service_account,
            operators=frozenset(settings.operator_emails),
            scheduler=settings.scheduler_service_account,
            push=settings.push_service_account,
        )
        return OidcVerifier(
            audience=audience,
            service_account_email=settings.tasks_service_account,
            principals=principals,
            certs_url=settings.oidc_certs_url or GOOGLE_CERTS_URL,
        )
    raise ConfigurationError(
        f"RELAY_BACKEND={settings.backend!r}: on Lambda, SQS and EventBridge invoke the "
        "handlers directly (authorised by IAM) and the HTTP surface is the public API "
        "only, so there are no HTTP deliveries to verify"
    )
