"""Configuration read from the environment: every variable declared once, in one table.

Each ``Settings`` attribute is declared with the variable that fills it, where that
variable is used, who sets it and how its text parses (``setting(...)``, see
``functions/env_table.py``); the few variables read elsewhere are
``env_table.READ_ELSEWHERE``. Together they are :data:`VARIABLES`:

* ``Settings.from_env`` reads every attribute through it (no second list of names);
* ``relay manifest`` derives each function's ``env`` and ``config`` from it
  (:func:`deployment_env`, :func:`fixed_config`), so Terraform sets exactly what the
  code reads;
* ``tests/tooling/test_manifest.py`` parses ``functions/``, ``core/``, ``infra/`` and
  ``tooling/`` and fails when code reads a variable the table does not declare.

A variable is listed in a function's ``env`` on a platform when it is
``set_by="deployment"``, that platform is among its ``platforms`` and the function's name
among its ``roles``. An empty variable reads as unset (Terraform may pass ``""``).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from core.errors import ConfigurationError
from functions.bundle import PIPELINE_MODULES, SAGA_MODULES
from functions.env_table import (
    ALL_BACKENDS,
    ALL_ROLES,
    API_ROLES,
    AWS,
    BACKENDS,
    CLOUD,
    DELIVERY_ROLES,
    EMULATOR_VARIABLES,
    GCP,
    LOCAL,
    READ_ELSEWHERE,
    EnvVariable,
    comma_list,
    integer,
    one_of,
    optional_text,
    path,
    setting,
    settings_variables,
    split_commas,
    string_map,
    text,
)

__all__ = [
    "BACKENDS",
    "EMULATOR_VARIABLES",
    "KEY_FILE_NAME",
    "METRICS_MODES",
    "VARIABLES",
    "EnvVariable",
    "Settings",
    "deployment_env",
    "fixed_config",
    "read_variable",
]

KEY_FILE_NAME = "signing.key"
METRICS_MODES: Final = ("auto", "on", "off")


def parse_saga_modules(name: str, value: str) -> dict[str, str]:
    """The bundle's sagas plus ``name=package.module:attribute`` entries of ``value``.

    Raises:
        ConfigurationError: an entry is not ``name=package.module:attribute``.
    """
    return _modules(SAGA_MODULES, name, value)


def parse_pipeline_modules(name: str, value: str) -> dict[str, str]:
    """The bundle's pipelines plus ``name=package.module:attribute`` entries of ``value``.

    Raises:
        ConfigurationError: an entry is not ``name=package.module:attribute``.
    """
    return _modules(PIPELINE_MODULES, name, value)


def _modules(bundled: Mapping[str, str], name: str, value: str) -> dict[str, str]:
    modules = dict(bundled)
    for item in split_commas(value):
        entry, eq, reference = item.partition("=")
        if not eq or ":" not in reference:
            raise ConfigurationError(
                f"{name} entry {item!r} must look like name=package.module:attribute"
            )
        modules[entry.strip()] = reference.strip()
    return modules


@dataclass(frozen=True)
class Settings:
    """Everything a function reads from its environment, one attribute per variable.

    Each attribute's ``setting(...)`` names its variable, the backends and function roles
    that use it, what it means, who sets it and how it parses; its default is what an
    empty environment reads. ``from_env`` then resolves ``metrics="auto"`` to ``on`` or
    ``off``. Emulator endpoints are the SDKs' own variables (``AWS_ENDPOINT_URL``,
    ``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``), read by the SDKs themselves.
    """

    # -- every backend ---------------------------------------------------------------------
    backend: str = setting(
        "RELAY_BACKEND",
        ALL_BACKENDS,
        ALL_ROLES,
        "local (SQLite, the default), memory, gcp or aws",
        parse=one_of(BACKENDS),
        default="local",
        fixed={"gcp": "gcp", "aws": "aws"},
    )
    # setting() returns a dataclasses.field with a default factory: no shared default.
    data_dir: Path = setting(  # noqa: RUF009
        "RELAY_DATA_DIR",
        ALL_BACKENDS,
        ALL_ROLES,
        "where the embedded backend keeps its files, and where the bundled demo services"
        " (functions/demo_services) keep demo.db on every backend: /tmp on the clouds, the only"
        " writable directory on Lambda",
        parse=path,
        default=".relay",
        fixed={"gcp": "/tmp/relay", "aws": "/tmp/relay"},
    )
    sagas: tuple[str, ...] = setting(
        "RELAY_SAGAS",
        ALL_BACKENDS,
        ALL_ROLES,
        "comma-separated saga names this function serves (all when empty)",
        parse=comma_list,
    )
    saga_modules: Mapping[str, str] = setting(
        "RELAY_SAGA_MODULES",
        ALL_BACKENDS,
        ALL_ROLES,
        "extra sagas: comma-separated name=package.module:attribute (added to the bundle's)",
        parse=parse_saga_modules,
    )
    pipeline_modules: Mapping[str, str] = setting(
        "RELAY_PIPELINE_MODULES",
        ALL_BACKENDS,
        ALL_ROLES,
        "extra pipelines: comma-separated name=package.module:attribute (added to the bundle's;"
        " pipelines and sagas share one namespace)",
        parse=parse_pipeline_modules,
    )
    faults: str = setting(
        "RELAY_FAULTS",
        ALL_BACKENDS,
        ALL_ROLES,
        "fault-injection rules for chaos testing (core/faults.py); never in production",
        parse=text,
        set_by="developer",
    )
    signing_key: str | None = setting(
        "RELAY_SIGNING_KEY",
        LOCAL,
        ALL_ROLES,
        "HMAC key of local deliveries (default: <data dir>/signing.key, created mode 0600;"
        " an existing one must be owned by the user and mode 0600 or stricter)",
        parse=optional_text,
        set_by="developer",
    )
    inline_output_limit_bytes: int = setting(
        "RELAY_INLINE_OUTPUT_LIMIT",
        ALL_BACKENDS,
        ALL_ROLES,
        "bytes; larger step outputs go through the I/O manager",
        parse=integer,
        default=str(64 * 1024),
    )
    # -- aws -------------------------------------------------------------------------------
    dynamodb_table: str = setting(
        "RELAY_DYNAMODB_TABLE",
        AWS,
        ALL_ROLES,
        "the single DynamoDB table of runs and steps",
        parse=text,
        default="relay",
    )
    sqs_queue_url: str | None = setting(
        "RELAY_SQS_QUEUE_URL", AWS, ALL_ROLES, "the SQS queue of step messages", parse=optional_text
    )
    s3_bucket: str | None = setting(
        "RELAY_S3_BUCKET",
        AWS,
        ALL_ROLES,
        "bucket of large step outputs (empty: outputs stay inline)",
        parse=optional_text,
    )
    scheduler_role_arn: str | None = setting(
        "RELAY_SCHEDULER_ROLE_ARN",
        AWS,
        ALL_ROLES,
        "role EventBridge Scheduler assumes to send step messages due over 900 s ahead "
        "(empty: they hop through SQS)",
        parse=optional_text,
    )
    scheduler_group: str | None = setting(
        "RELAY_SCHEDULER_GROUP",
        AWS,
        ALL_ROLES,
        "schedule group of those one-time schedules (empty: default)",
        parse=optional_text,
    )
    # -- gcp -------------------------------------------------------------------------------
    gcp_project: str | None = setting(
        "GOOGLE_CLOUD_PROJECT",
        GCP,
        ALL_ROLES,
        "the project of Firestore, Cloud Tasks, metrics and log trace names",
        parse=optional_text,
    )
    firestore_database: str | None = setting(
        "RELAY_FIRESTORE_DATABASE",
        GCP,
        ALL_ROLES,
        "Firestore database id (empty: (default))",
        parse=optional_text,
    )
    firestore_collection: str = setting(
        "RELAY_FIRESTORE_COLLECTION",
        GCP,
        ALL_ROLES,
        "collection of run documents",
        parse=text,
        default="relay_runs",
    )
    gcs_bucket: str | None = setting(
        "RELAY_GCS_BUCKET",
        GCP,
        ALL_ROLES,
        "bucket of large step outputs (empty: outputs stay inline)",
        parse=optional_text,
    )
    tasks_queue: str | None = setting(
        "RELAY_TASKS_QUEUE",
        GCP,
        ALL_ROLES,
        "Cloud Tasks queue path projects/P/locations/L/queues/Q of step messages",
        parse=optional_text,
    )
    worker_url: str | None = setting(
        "RELAY_WORKER_URL",
        GCP,
        ALL_ROLES,
        "where Cloud Tasks delivers step messages (the worker's URL)",
        parse=optional_text,
    )
    tasks_service_account: str | None = setting(
        "RELAY_TASKS_SERVICE_ACCOUNT",
        GCP,
        ALL_ROLES,
        "identity whose OIDC token Cloud Tasks attaches, and that the worker accepts",
        parse=optional_text,
    )
    operator_emails: tuple[str, ...] = setting(
        "RELAY_OPERATOR_EMAILS",
        GCP,
        DELIVERY_ROLES,
        "comma-separated emails whose Google ID tokens may call the worker's retry and"
        " cancel routes (empty: those routes answer 403)",
        parse=comma_list,
    )
    scheduler_service_account: str | None = setting(
        "RELAY_SCHEDULER_SERVICE_ACCOUNT",
        GCP,
        DELIVERY_ROLES,
        "identity whose OIDC token Cloud Scheduler attaches to schedule and sweep calls"
        " (empty: RELAY_TASKS_SERVICE_ACCOUNT)",
        parse=optional_text,
    )
    push_service_account: str | None = setting(
        "RELAY_PUSH_SERVICE_ACCOUNT",
        GCP,
        DELIVERY_ROLES,
        "identity whose OIDC token Pub/Sub push attaches to event deliveries"
        " (empty: RELAY_TASKS_SERVICE_ACCOUNT)",
        parse=optional_text,
    )
    tasks_audience: str | None = setting(
        "RELAY_TASKS_AUDIENCE",
        GCP,
        ALL_ROLES,
        "the OIDC token audience (empty: the worker URL)",
        parse=optional_text,
    )
    # -- the clouds' metrics, and how messages and events are routed ----------------------
    metrics: str = setting(
        "RELAY_METRICS",
        CLOUD,
        ALL_ROLES,
        "on, off or auto: Cloud Monitoring (gcp) or CloudWatch EMF (aws) metrics; auto is on"
        " unless the backend's emulator variable (FIRESTORE_EMULATOR_HOST, AWS_ENDPOINT_URL)"
        " is set, and off locally (no metrics sink)",
        parse=one_of(METRICS_MODES, lower=True),
        default="auto",
        fixed={"gcp": "on", "aws": "on"},
    )
    tasks_queues: Mapping[str, str] = setting(
        "RELAY_TASKS_QUEUES",
        GCP,
        ALL_ROLES,
        "JSON object: a saga queue name -> its Cloud Tasks queue path (sagas whose queue is"
        " not named use RELAY_TASKS_QUEUE)",
        parse=string_map,
    )
    oidc_certs_url: str | None = setting(
        "RELAY_OIDC_CERTS_URL",
        GCP,
        DELIVERY_ROLES,
        "keys that sign OIDC tokens (default: Google's; https, or http on a loopback host);"
        " tests point it at a local server",
        parse=optional_text,
        set_by="developer",
    )
    pubsub_topics: Mapping[str, str] = setting(
        "RELAY_PUBSUB_TOPICS",
        GCP,
        DELIVERY_ROLES,
        "JSON object: a Pub/Sub subscription or topic id -> the Relay topic of its messages"
        " (for messages without a relay_topic attribute)",
        parse=string_map,
    )

    # -- who may call the run API (functions/http/callers.py) ------------------------------
    api_auth: str | None = setting(
        "RELAY_API_AUTH",
        ALL_BACKENDS,
        API_ROLES,
        "how run API callers authenticate: api_key, jwt, api_key,jwt, platform or public"
        " (empty: platform on gcp/aws, api_key locally; relay dev on loopback is open)",
        parse=optional_text,
    )
    platform_grants: str = setting(
        "RELAY_PLATFORM_GRANTS",
        CLOUD,
        API_ROLES,
        "with RELAY_API_AUTH=platform: what every caller the platform let through may do"
        " (saga:start,read;other:read syntax, * for every saga)",
        parse=text,
        default="*:start,read",
    )
    jwt_issuer: str | None = setting(
        "RELAY_JWT_ISSUER",
        ALL_BACKENDS,
        API_ROLES,
        "with RELAY_API_AUTH=jwt: the exact iss of accepted tokens (https)",
        parse=optional_text,
    )
    jwt_audience: str | None = setting(
        "RELAY_JWT_AUDIENCE",
        ALL_BACKENDS,
        API_ROLES,
        "with RELAY_API_AUTH=jwt: the aud accepted tokens must carry",
        parse=optional_text,
    )
    jwt_jwks_url: str | None = setting(
        "RELAY_JWT_JWKS_URL",
        ALL_BACKENDS,
        API_ROLES,
        "with RELAY_API_AUTH=jwt: the issuer's JWKS (empty: jwks_uri of its OIDC discovery)",
        parse=optional_text,
    )
    jwt_grants_claim: str = setting(
        "RELAY_JWT_GRANTS_CLAIM",
        ALL_BACKENDS,
        API_ROLES,
        "with RELAY_API_AUTH=jwt: the claim holding the caller's grants (grant syntax)",
        parse=text,
        default="relay_grants",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) through the table.

        Raises:
            ConfigurationError: naming the variable that is wrong.
        """
        env = os.environ if environ is None else environ
        # Any: each value comes from the parser declared on its own field, whose result
        # type mypy checked against the field's annotation in setting().
        values: dict[str, Any] = {}
        for declared in _SETTINGS_VARIABLES:
            assert declared.attribute is not None and declared.parse is not None
            values[declared.attribute] = declared.parse(
                declared.name, read_variable(env, declared.name)
            )
        read = cls(**values)
        return dataclasses.replace(read, metrics=_metrics_mode(env, read.metrics, read.backend))

    def signing_key_bytes(self) -> bytes:
        """The HMAC key for local deliveries, creating a private key file on first use.

        Raises:
            ConfigurationError: an existing key file is not ours alone (it names the path
                and the fix, such as ``chmod 600``).
        """
        from infra.local.private_files import (  # only the local backends sign
            ensure_private_dir,
            read_private_key,
            write_private_key,
        )

        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / KEY_FILE_NAME
        try:
            return read_private_key(path)
        except FileNotFoundError:
            pass
        ensure_private_dir(self.data_dir)
        key = secrets.token_hex(32).encode()
        if not write_private_key(path, key):  # another process created it first: use theirs
            return read_private_key(path)
        return key


_SETTINGS_VARIABLES: Final = settings_variables(Settings)

VARIABLES: Final[Mapping[str, EnvVariable]] = {
    declared.name: declared for declared in (*_SETTINGS_VARIABLES, *READ_ELSEWHERE)
}
"""Every environment variable Relay's code reads, by name."""


def deployment_env(*, platform: str, role: str) -> list[str]:
    """The variables a deployment sets for function ``role`` on ``platform``, sorted."""
    return sorted(
        declared.name
        for declared in VARIABLES.values()
        if declared.set_by == "deployment"
        and platform in declared.platforms
        and role in declared.roles
    )


def fixed_config(platform: str) -> dict[str, str]:
    """The values every function gets on ``platform`` (the manifest's ``config``)."""
    return {
        declared.name: value
        for declared in VARIABLES.values()
        for fixed_platform, value in declared.fixed
        if fixed_platform == platform
    }


def read_variable(env: Mapping[str, str], name: str) -> str:
    """The stripped value of declared variable ``name`` in ``env``; its default when empty.

    Raises:
        KeyError: ``name`` is not in ``VARIABLES`` (declare it there first).
    """
    declared = VARIABLES[name]
    return env.get(declared.name, "").strip() or declared.default


def _metrics_mode(env: Mapping[str, str], mode: str, backend: str) -> str:
    """``RELAY_METRICS`` resolved to ``on`` or ``off`` (see its description above)."""
    if mode != "auto":
        return mode
    if backend == "gcp":
        return "off" if env.get("FIRESTORE_EMULATOR_HOST") else "on"
    if backend == "aws":
        return "off" if env.get("AWS_ENDPOINT_URL") else "on"
    return "off"  # no metrics sink locally
