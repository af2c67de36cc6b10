"""Configuration read from the environment, in one place, with one spelling per name.

``VARIABLES`` declares every environment variable Relay's own code reads (here, and in
``functions/logs.py``, ``core/faults.py``, ``infra/``), with the backends that use it, the
function roles that need it and who sets it. ``Settings.from_env`` reads through that
table, and ``relay manifest`` derives each function's ``env`` from it, so Terraform sets
exactly what the code reads. ``tests/tooling/test_manifest.py`` parses ``functions/``,
``core/`` and ``infra/`` and fails when code reads a variable the table does not declare.

The rule for the manifest's ``env``: a variable is listed for a function on a platform
when it is ``set_by="deployment"``, that platform is among its ``platforms`` and the
function's name among its ``roles``. Not listed:

* ``set_by="runtime"``: the host sets it (Cloud Run's ``K_SERVICE``/``K_REVISION``,
  Lambda's credentials and ``_X_AMZN_TRACE_ID``, a terminal's ``COLUMNS``); a deployment
  must not.
* ``set_by="developer"``: local runs and tests only (``RELAY_SIGNING_KEY``,
  ``RELAY_FAULTS``, ``RELAY_OIDC_CERTS_URL``).
* ``EMULATOR_VARIABLES``: emulator endpoints, read by the SDKs themselves (and by the
  metrics switch below); never part of a deployment.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from core.errors import ConfigurationError
from functions.bundle import SAGA_MODULES

BACKENDS = ("local", "memory", "gcp", "aws")
KEY_FILE_NAME = "signing.key"

Platform = Literal["local", "memory", "gcp", "aws"]
"""A value of ``RELAY_BACKEND``; ``gcp`` and ``aws`` are also the deployment platforms."""
SetBy = Literal["deployment", "runtime", "developer"]
"""Who gives a variable its value (see the module docstring)."""

ALL_BACKENDS: Final = frozenset({"local", "memory", "gcp", "aws"})
CLOUD: Final = frozenset({"gcp", "aws"})
LOCAL: Final = frozenset({"local"})
ALL_ROLES: Final = frozenset({"api", "worker", "relay", "pubsub"})
"""Function roles: the names of the manifest's function targets."""
DELIVERY_ROLES: Final = frozenset({"worker", "relay", "pubsub"})
"""Roles that receive Pub/Sub messages (push to ``/v1/events`` or Eventarc)."""
NO_ROLES: Final = frozenset[str]()
"""CLI and tooling only: no deployed function reads it."""


@dataclass(frozen=True, slots=True)
class EnvVariable:
    """One environment variable that Relay's code reads.

    Attributes:
        name: The variable, spelled once.
        platforms: Backends (``RELAY_BACKEND`` values) on which the code uses it.
        roles: Function roles (``api``, ``worker``, ``relay``, ``pubsub``) that need it.
        description: What it means, for ``docs/manifest.md`` readers and Terraform.
        set_by: Who sets it: the deployment, the runtime (host), or a developer.
        default: The value used when it is unset or empty.
        fixed: Per platform, the value every function gets (the manifest's ``config``).
    """

    name: str
    platforms: frozenset[str]
    roles: frozenset[str]
    description: str
    set_by: SetBy = "deployment"
    default: str = ""
    fixed: tuple[tuple[str, str], ...] = ()


def _var(
    name: str,
    platforms: frozenset[str],
    roles: frozenset[str],
    description: str,
    *,
    set_by: SetBy = "deployment",
    default: str = "",
    fixed: Mapping[str, str] | None = None,
) -> tuple[str, EnvVariable]:
    fixed_pairs = tuple(sorted((fixed or {}).items()))
    return name, EnvVariable(name, platforms, roles, description, set_by, default, fixed_pairs)


VARIABLES: Final[Mapping[str, EnvVariable]] = dict(
    [
        # -- every backend ----------------------------------------------------------------
        _var(
            "RELAY_BACKEND",
            ALL_BACKENDS,
            ALL_ROLES,
            "local (SQLite, the default), memory, gcp or aws",
            default="local",
            fixed={"gcp": "gcp", "aws": "aws"},
        ),
        _var(
            "RELAY_SAGAS",
            ALL_BACKENDS,
            ALL_ROLES,
            "comma-separated saga names this function serves (all when empty)",
        ),
        _var(
            "RELAY_SAGA_MODULES",
            ALL_BACKENDS,
            ALL_ROLES,
            "extra sagas: comma-separated name=package.module:attribute",
        ),
        _var(
            "RELAY_INLINE_OUTPUT_LIMIT",
            ALL_BACKENDS,
            ALL_ROLES,
            "bytes; larger step outputs go through the I/O manager",
            default=str(64 * 1024),
        ),
        _var(
            "RELAY_LOG_LEVEL",
            ALL_BACKENDS,
            ALL_ROLES,
            "DEBUG, INFO, WARNING or ERROR (read by functions/logs.py)",
            default="INFO",
        ),
        _var(
            "RELAY_LOG_FORMAT",
            ALL_BACKENDS,
            ALL_ROLES,
            "gcp, aws or plain log lines (read by functions/logs.py); default: the backend's",
            fixed={"gcp": "gcp", "aws": "aws"},
        ),
        _var(
            "RELAY_METRICS",
            CLOUD,
            ALL_ROLES,
            "on, off or auto: Cloud Monitoring (gcp) or CloudWatch EMF (aws) metrics",
            default="auto",
            fixed={"gcp": "on", "aws": "on"},
        ),
        _var(
            "RELAY_FAULTS",
            ALL_BACKENDS,
            ALL_ROLES,
            "fault-injection rules for chaos testing (core/faults.py); never in production",
            set_by="developer",
        ),
        # -- local ------------------------------------------------------------------------
        _var(
            "RELAY_DATA_DIR",
            ALL_BACKENDS,
            ALL_ROLES,
            "where the embedded backend keeps its files, and where the bundled demo services"
            " (functions/demo_services) keep demo.db on every backend: /tmp on the clouds, the only"
            " writable directory on Lambda",
            default=".relay",
            fixed={"gcp": "/tmp/relay", "aws": "/tmp/relay"},
        ),
        _var(
            "RELAY_SIGNING_KEY",
            LOCAL,
            ALL_ROLES,
            "HMAC key of local deliveries (default: <data dir>/signing.key)",
            set_by="developer",
        ),
        _var(
            "COLUMNS",
            LOCAL,
            NO_ROLES,
            "terminal width for the CLI's tables (tooling/timeline.py)",
            set_by="runtime",
        ),
        _var(
            "PYTHONPATH",
            LOCAL,
            NO_ROLES,
            "extended for the processes `relay dev` starts (tooling/local_stack.py)",
            set_by="runtime",
        ),
        # -- gcp --------------------------------------------------------------------------
        _var(
            "GOOGLE_CLOUD_PROJECT",
            frozenset({"gcp"}),
            ALL_ROLES,
            "the project of Firestore, Cloud Tasks, metrics and log trace names",
        ),
        _var(
            "GOOGLE_CLOUD_REGION",
            frozenset({"gcp"}),
            ALL_ROLES,
            "the region, as the location label of metrics (infra/gcp/monitoring.py)",
        ),
        _var(
            "RELAY_FIRESTORE_DATABASE",
            frozenset({"gcp"}),
            ALL_ROLES,
            "Firestore database id (empty: (default))",
        ),
        _var(
            "RELAY_FIRESTORE_COLLECTION",
            frozenset({"gcp"}),
            ALL_ROLES,
            "collection of run documents",
            default="relay_runs",
        ),
        _var(
            "RELAY_GCS_BUCKET",
            frozenset({"gcp"}),
            ALL_ROLES,
            "bucket of large step outputs (empty: outputs stay inline)",
        ),
        _var(
            "RELAY_TASKS_QUEUE",
            frozenset({"gcp"}),
            ALL_ROLES,
            "Cloud Tasks queue path projects/P/locations/L/queues/Q of step messages",
        ),
        _var(
            "RELAY_TASKS_QUEUES",
            frozenset({"gcp"}),
            ALL_ROLES,
            "JSON object: a saga queue name -> its Cloud Tasks queue path",
        ),
        _var(
            "RELAY_WORKER_URL",
            frozenset({"gcp"}),
            ALL_ROLES,
            "where Cloud Tasks delivers step messages (the worker's URL)",
        ),
        _var(
            "RELAY_TASKS_SERVICE_ACCOUNT",
            frozenset({"gcp"}),
            ALL_ROLES,
            "identity whose OIDC token Cloud Tasks attaches, and that the worker accepts",
        ),
        _var(
            "RELAY_TASKS_AUDIENCE",
            frozenset({"gcp"}),
            ALL_ROLES,
            "the OIDC token audience (empty: the worker URL)",
        ),
        _var(
            "RELAY_PUBSUB_TOPICS",
            frozenset({"gcp"}),
            DELIVERY_ROLES,
            "JSON object: a Pub/Sub subscription or topic id -> the Relay topic of its messages",
        ),
        _var(
            "RELAY_OIDC_CERTS_URL",
            frozenset({"gcp"}),
            DELIVERY_ROLES,
            "keys that sign OIDC tokens (default: Google's); tests point it at a local server",
            set_by="developer",
        ),
        _var(
            "K_SERVICE",
            frozenset({"gcp"}),
            ALL_ROLES,
            "set by Cloud Run: the service name (metrics resource labels)",
            set_by="runtime",
        ),
        _var(
            "K_REVISION",
            frozenset({"gcp"}),
            ALL_ROLES,
            "set by Cloud Run: the revision name (metrics resource labels)",
            set_by="runtime",
        ),
        # -- aws --------------------------------------------------------------------------
        _var(
            "RELAY_DYNAMODB_TABLE",
            frozenset({"aws"}),
            ALL_ROLES,
            "the single DynamoDB table of runs and steps",
            default="relay",
        ),
        _var(
            "RELAY_SQS_QUEUE_URL",
            frozenset({"aws"}),
            ALL_ROLES,
            "the SQS queue of step messages",
        ),
        _var(
            "RELAY_S3_BUCKET",
            frozenset({"aws"}),
            ALL_ROLES,
            "bucket of large step outputs (empty: outputs stay inline)",
        ),
        _var(
            "RELAY_SCHEDULER_ROLE_ARN",
            frozenset({"aws"}),
            ALL_ROLES,
            "role EventBridge Scheduler assumes to send step messages due over 900 s ahead "
            "(empty: they hop through SQS)",
        ),
        _var(
            "RELAY_SCHEDULER_GROUP",
            frozenset({"aws"}),
            ALL_ROLES,
            "schedule group of those one-time schedules (empty: default)",
        ),
        _var(
            "_X_AMZN_TRACE_ID",
            frozenset({"aws"}),
            ALL_ROLES,
            "set by Lambda per invocation: the X-Ray trace of log lines",
            set_by="runtime",
        ),
        *(
            _var(
                name,
                frozenset({"aws"}),
                ALL_ROLES,
                "set by Lambda (the execution role's credentials): keys the boto3 session",
                set_by="runtime",
            )
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        ),
        _var(
            "AWS_PROFILE",
            frozenset({"aws"}),
            ALL_ROLES,
            "a developer's named profile; keys the boto3 session (unset on Lambda)",
            set_by="developer",
        ),
    ]
)
"""Every environment variable Relay's code reads, by name."""

EMULATOR_VARIABLES: Final = (
    "AWS_ENDPOINT_URL",
    "CLOUD_TASKS_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
)
"""Emulator endpoints: read by the SDKs (and to turn metrics off), never deployment config."""


def deployment_env(*, platform: str, role: str) -> list[str]:
    """The variables a deployment sets for function ``role`` on ``platform``, sorted."""
    return sorted(
        variable.name
        for variable in VARIABLES.values()
        if variable.set_by == "deployment"
        and platform in variable.platforms
        and role in variable.roles
    )


def fixed_config(platform: str) -> dict[str, str]:
    """The values every function gets on ``platform`` (the manifest's ``config``)."""
    return {
        variable.name: value
        for variable in VARIABLES.values()
        for fixed_platform, value in variable.fixed
        if fixed_platform == platform
    }


def read_variable(env: Mapping[str, str], name: str) -> str:
    """The stripped value of declared variable ``name`` in ``env``; its default when empty.

    Raises:
        KeyError: ``name`` is not in ``VARIABLES`` (declare it there first).
    """
    variable = VARIABLES[name]
    return env.get(variable.name, "").strip() or variable.default


@dataclass(frozen=True)
class Settings:
    """Everything a function reads from its environment.

    Attributes:
        backend: ``RELAY_BACKEND``: local (SQLite, the default), memory, gcp or aws.
        data_dir: ``RELAY_DATA_DIR``: where the embedded backend keeps its files.
        sagas: ``RELAY_SAGAS``: comma-separated saga names this process serves (all when
            empty).
        saga_modules: the bundle's sagas plus ``RELAY_SAGA_MODULES`` entries.
        faults: ``RELAY_FAULTS``: fault-injection rules (see ``core.faults``).
        signing_key: ``RELAY_SIGNING_KEY``: HMAC key for local deliveries; when unset it is
            read from (or created in) ``<data_dir>/signing.key``.
        inline_output_limit_bytes: ``RELAY_INLINE_OUTPUT_LIMIT``: outputs larger than
            this go through the I/O manager.
        dynamodb_table: ``RELAY_DYNAMODB_TABLE``: the single table of the aws backend.
        sqs_queue_url: ``RELAY_SQS_QUEUE_URL``: the step queue of the aws backend.
        s3_bucket: ``RELAY_S3_BUCKET``: large outputs on aws (none: outputs stay inline).
        scheduler_role_arn: ``RELAY_SCHEDULER_ROLE_ARN``: the role EventBridge Scheduler
            assumes to send to the step queue; when set, step messages due more than
            900 s ahead become one-time schedules (none: they hop through SQS).
        scheduler_group: ``RELAY_SCHEDULER_GROUP``: the schedule group of those
            schedules (none: Scheduler's ``default`` group).
        gcp_project: ``GOOGLE_CLOUD_PROJECT``: the project of the gcp backend.
        firestore_database: ``RELAY_FIRESTORE_DATABASE``: Firestore database id.
        firestore_collection: ``RELAY_FIRESTORE_COLLECTION``: collection of run documents.
        gcs_bucket: ``RELAY_GCS_BUCKET``: large outputs on gcp (none: outputs stay inline).
        tasks_queue: ``RELAY_TASKS_QUEUE``: Cloud Tasks queue path
            (``projects/P/locations/L/queues/Q``).
        worker_url: ``RELAY_WORKER_URL``: where Cloud Tasks delivers step messages.
        tasks_service_account: ``RELAY_TASKS_SERVICE_ACCOUNT``: the identity whose OIDC
            token Cloud Tasks attaches, and that the worker accepts.
        tasks_audience: ``RELAY_TASKS_AUDIENCE``: the token audience (default: the worker URL).
        metrics: ``RELAY_METRICS``: ``on``, ``off`` or ``auto``. Auto (the default) sends
            metrics on the gcp backend (Cloud Monitoring) and the aws backend (CloudWatch
            EMF lines) unless that backend's emulator variable (``FIRESTORE_EMULATOR_HOST``,
            ``AWS_ENDPOINT_URL``) is set; there is no metrics sink locally.
        tasks_queues: ``RELAY_TASKS_QUEUES``: JSON object mapping a saga's ``queue`` name
            to a Cloud Tasks queue path; sagas whose queue is not named use
            ``RELAY_TASKS_QUEUE``.
        oidc_certs_url: ``RELAY_OIDC_CERTS_URL``: where the worker fetches the keys that
            sign OIDC tokens (default: Google's); https, or http on a loopback host only.
        pubsub_topics: ``RELAY_PUBSUB_TOPICS``: JSON object mapping a Pub/Sub
            subscription or topic id to the Relay topic of its messages (used when a
            message carries no ``relay_topic`` attribute).

    Emulator endpoints are the SDKs' own variables (``AWS_ENDPOINT_URL``,
    ``FIRESTORE_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST``), read by the SDKs themselves.
    """

    backend: str = "local"
    data_dir: Path = Path(".relay")
    sagas: tuple[str, ...] = ()
    saga_modules: Mapping[str, str] = field(default_factory=lambda: dict(SAGA_MODULES))
    faults: str = ""
    signing_key: str | None = None
    inline_output_limit_bytes: int = 64 * 1024
    dynamodb_table: str = "relay"
    sqs_queue_url: str | None = None
    s3_bucket: str | None = None
    scheduler_role_arn: str | None = None
    scheduler_group: str | None = None
    gcp_project: str | None = None
    firestore_database: str | None = None
    firestore_collection: str = "relay_runs"
    gcs_bucket: str | None = None
    tasks_queue: str | None = None
    worker_url: str | None = None
    tasks_service_account: str | None = None
    tasks_audience: str | None = None
    metrics: str = "auto"
    tasks_queues: Mapping[str, str] = field(default_factory=dict)
    oidc_certs_url: str | None = None
    pubsub_topics: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``).

        Raises:
            ConfigurationError: naming the variable that is wrong.
        """
        env = os.environ if environ is None else environ

        def value(name: str) -> str:
            return read_variable(env, name)

        backend = value("RELAY_BACKEND")
        if backend not in BACKENDS:
            raise ConfigurationError(
                f"RELAY_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}"
            )
        modules = dict(SAGA_MODULES)
        for item in _split(value("RELAY_SAGA_MODULES")):
            name, eq, reference = item.partition("=")
            if not eq or ":" not in reference:
                raise ConfigurationError(
                    f"RELAY_SAGA_MODULES entry {item!r} must look like "
                    "name=package.module:attribute"
                )
            modules[name.strip()] = reference.strip()
        limit_text = value("RELAY_INLINE_OUTPUT_LIMIT")
        try:
            limit = int(limit_text)
        except ValueError:
            raise ConfigurationError(
                f"RELAY_INLINE_OUTPUT_LIMIT={limit_text!r} is not an integer"
            ) from None
        return cls(
            backend=backend,
            data_dir=Path(value("RELAY_DATA_DIR")),
            sagas=tuple(_split(value("RELAY_SAGAS"))),
            saga_modules=modules,
            faults=value("RELAY_FAULTS"),
            signing_key=value("RELAY_SIGNING_KEY") or None,
            inline_output_limit_bytes=limit,
            dynamodb_table=value("RELAY_DYNAMODB_TABLE"),
            sqs_queue_url=value("RELAY_SQS_QUEUE_URL") or None,
            s3_bucket=value("RELAY_S3_BUCKET") or None,
            scheduler_role_arn=value("RELAY_SCHEDULER_ROLE_ARN") or None,
            scheduler_group=value("RELAY_SCHEDULER_GROUP") or None,
            gcp_project=value("GOOGLE_CLOUD_PROJECT") or None,
            firestore_database=value("RELAY_FIRESTORE_DATABASE") or None,
            firestore_collection=value("RELAY_FIRESTORE_COLLECTION"),
            gcs_bucket=value("RELAY_GCS_BUCKET") or None,
            tasks_queue=value("RELAY_TASKS_QUEUE") or None,
            worker_url=value("RELAY_WORKER_URL") or None,
            tasks_service_account=value("RELAY_TASKS_SERVICE_ACCOUNT") or None,
            tasks_audience=value("RELAY_TASKS_AUDIENCE") or None,
            metrics=_metrics_mode(env, value("RELAY_METRICS").lower(), backend),
            tasks_queues=_string_map("RELAY_TASKS_QUEUES", value("RELAY_TASKS_QUEUES")),
            oidc_certs_url=value("RELAY_OIDC_CERTS_URL") or None,
            pubsub_topics=_string_map("RELAY_PUBSUB_TOPICS", value("RELAY_PUBSUB_TOPICS")),
        )

    def signing_key_bytes(self) -> bytes:
        """The HMAC key for local deliveries, creating a private key file on first use."""
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / KEY_FILE_NAME
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


METRICS_MODES = ("auto", "on", "off")


def _metrics_mode(env: Mapping[str, str], mode: str, backend: str) -> str:
    """``RELAY_METRICS`` resolved to ``on`` or ``off`` (see ``Settings.metrics``)."""
    if mode not in METRICS_MODES:
        raise ConfigurationError(f"RELAY_METRICS={mode!r} is not one of {', '.join(METRICS_MODES)}")
    if mode != "auto":
        return mode
    if backend == "gcp":
        return "off" if env.get("FIRESTORE_EMULATOR_HOST") else "on"
    if backend == "aws":
        return "off" if env.get("AWS_ENDPOINT_URL") else "on"
    return "off"  # no metrics sink locally


def _string_map(name: str, text: str) -> dict[str, str]:
    """A JSON object of non-empty strings in variable ``name``; {} when unset or empty."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigurationError(
            f'{name} must be a JSON object of non-empty strings, like {{"name": "value"}}'
        )
    return value
