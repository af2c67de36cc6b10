"""Configuration read from the environment, in one place, with one spelling per name."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigurationError
from functions.bundle import SAGA_MODULES

BACKENDS = ("local", "memory", "gcp", "aws")
KEY_FILE_NAME = "signing.key"


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
        backend = env.get("RELAY_BACKEND", "local").strip() or "local"
        if backend not in BACKENDS:
            raise ConfigurationError(
                f"RELAY_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}"
            )
        modules = dict(SAGA_MODULES)
        for item in _split(env.get("RELAY_SAGA_MODULES", "")):
            name, eq, reference = item.partition("=")
            if not eq or ":" not in reference:
                raise ConfigurationError(
                    f"RELAY_SAGA_MODULES entry {item!r} must look like "
                    "name=package.module:attribute"
                )
            modules[name.strip()] = reference.strip()
        limit_text = env.get("RELAY_INLINE_OUTPUT_LIMIT", str(64 * 1024))
        try:
            limit = int(limit_text)
        except ValueError:
            raise ConfigurationError(
                f"RELAY_INLINE_OUTPUT_LIMIT={limit_text!r} is not an integer"
            ) from None
        return cls(
            backend=backend,
            data_dir=Path(env.get("RELAY_DATA_DIR", ".relay")),
            sagas=tuple(_split(env.get("RELAY_SAGAS", ""))),
            saga_modules=modules,
            faults=env.get("RELAY_FAULTS", ""),
            signing_key=env.get("RELAY_SIGNING_KEY") or None,
            inline_output_limit_bytes=limit,
            dynamodb_table=env.get("RELAY_DYNAMODB_TABLE", "relay"),
            sqs_queue_url=env.get("RELAY_SQS_QUEUE_URL") or None,
            s3_bucket=env.get("RELAY_S3_BUCKET") or None,
            scheduler_role_arn=env.get("RELAY_SCHEDULER_ROLE_ARN") or None,
            scheduler_group=env.get("RELAY_SCHEDULER_GROUP") or None,
            gcp_project=env.get("GOOGLE_CLOUD_PROJECT") or None,
            firestore_database=env.get("RELAY_FIRESTORE_DATABASE") or None,
            firestore_collection=env.get("RELAY_FIRESTORE_COLLECTION", "relay_runs"),
            gcs_bucket=env.get("RELAY_GCS_BUCKET") or None,
            tasks_queue=env.get("RELAY_TASKS_QUEUE") or None,
            worker_url=env.get("RELAY_WORKER_URL") or None,
            tasks_service_account=env.get("RELAY_TASKS_SERVICE_ACCOUNT") or None,
            tasks_audience=env.get("RELAY_TASKS_AUDIENCE") or None,
            metrics=_metrics_mode(env, backend),
            tasks_queues=_string_map(env, "RELAY_TASKS_QUEUES"),
            oidc_certs_url=env.get("RELAY_OIDC_CERTS_URL") or None,
            pubsub_topics=_string_map(env, "RELAY_PUBSUB_TOPICS"),
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
_EMULATOR_VARIABLES = {"gcp": "FIRESTORE_EMULATOR_HOST", "aws": "AWS_ENDPOINT_URL"}


def _metrics_mode(env: Mapping[str, str], backend: str) -> str:
    """``RELAY_METRICS`` resolved to ``on`` or ``off`` (see ``Settings.metrics``)."""
    mode = env.get("RELAY_METRICS", "auto").strip().lower() or "auto"
    if mode not in METRICS_MODES:
        raise ConfigurationError(f"RELAY_METRICS={mode!r} is not one of {', '.join(METRICS_MODES)}")
    if mode != "auto":
        return mode
    emulator = _EMULATOR_VARIABLES.get(backend)
    return "on" if emulator is not None and not env.get(emulator) else "off"


def _string_map(env: Mapping[str, str], name: str) -> dict[str, str]:
    """A JSON object of non-empty strings in variable ``name``; {} when unset or empty."""
    import json

    text = env.get(name, "").strip()
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
