"""The composition root: settings in, an ``Engine`` with the configured adapters out.

Adapter modules are imported inside their backend's branch, so the local bundle never
imports a cloud SDK and a cloud function imports only its own.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core.domain.records import Message
from core.domain.status import Action
from core.engine.engine import Engine
from core.engine.executor import AttemptExecutor, StepExecutor
from core.engine.saga_runner import RunnerSettings
from core.errors import ConfigurationError
from core.faults import FaultInjectingExecutor, FaultPlan
from core.ports.api_keys import ApiKeyStore
from core.ports.io_manager import IOManager
from core.ports.metrics import BufferedMetricsSink, NullMetrics
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue
from core.registry import SagaRegistry
from functions.http.callers import Authenticator
from functions.settings import Settings

_log = logging.getLogger("relay.wiring")


@dataclass(frozen=True)
class Backend:
    """The adapters of one backend, built together because they may share a connection."""

    store: StateStore
    queue: TaskQueue
    io_manager: IOManager | None
    closers: tuple[Callable[[], None], ...] = ()


def build_registry(settings: Settings) -> SagaRegistry:
    """The sagas and pipelines this process serves: ``RELAY_SAGAS`` or all of the bundle's.

    Pipelines (``RELAY_PIPELINE_MODULES`` and the bundle's) run as sagas and share their
    namespace: ``RELAY_SAGAS`` names either.

    Raises:
        DefinitionError: a pipeline has the name of a saga.
        ConfigurationError: ``RELAY_SAGAS`` names something the bundle lacks.
    """
    registry = SagaRegistry(dict(settings.saga_modules), pipelines=dict(settings.pipeline_modules))
    return registry.restricted_to(settings.sagas) if settings.sagas else registry


def build_backend(settings: Settings) -> Backend:
    """Adapters for ``settings.backend``.

    Raises:
        ConfigurationError: the backend is unknown or not available in this build.
    """
    if settings.backend == "local":
        from infra.local.fs_io_manager import FilesystemIOManager
        from infra.local.sqlite_db import SQLiteDatabase
        from infra.local.sqlite_queue import SQLiteTaskQueue
        from infra.local.sqlite_store import SQLiteStateStore

        database = SQLiteDatabase.from_settings(settings.data_dir)
        return Backend(
            store=SQLiteStateStore(database),
            queue=SQLiteTaskQueue(database),
            io_manager=FilesystemIOManager(settings.data_dir / "outputs"),
            closers=(database.close,),
        )
    if settings.backend == "memory":
        from infra.memory.io_manager import MemoryIOManager
        from infra.memory.state_store import MemoryStateStore
        from infra.memory.task_queue import MemoryTaskQueue

        return Backend(
            store=MemoryStateStore(), queue=MemoryTaskQueue(), io_manager=MemoryIOManager()
        )
    if settings.backend == "aws":
        return _aws_backend(settings)
    if settings.backend == "gcp":
        return _gcp_backend(settings)
    raise ConfigurationError(
        f"RELAY_BACKEND={settings.backend!r} is not available in this build; "
        "use local, memory, gcp or aws"
    )


def _gcp_backend(settings: Settings) -> Backend:
    """Firestore state, Cloud Tasks steps, GCS outputs; Google clients are imported here.

    ``FIRESTORE_EMULATOR_HOST``, ``CLOUD_TASKS_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST``
    point the clients at emulators (read by the adapters' ``from_settings``).
    """
    queue_path, worker_url = settings.tasks_queue, settings.worker_url
    if not queue_path or not worker_url:
        missing = [
            name
            for name, value in (("RELAY_TASKS_QUEUE", queue_path), ("RELAY_WORKER_URL", worker_url))
            if not value
        ]
        raise ConfigurationError(
            f"RELAY_BACKEND=gcp needs {' and '.join(missing)} (the Cloud Tasks queue path "
            "projects/P/locations/L/queues/Q, and the worker URL tasks are POSTed to)"
        )
    from infra.gcp.cloud_tasks import CloudTasksQueue, check_queue_path
    from infra.gcp.firestore import FirestoreStateStore

    for name, path in settings.tasks_queues.items():
        check_queue_path(path, variable=f"RELAY_TASKS_QUEUES[{name!r}]")
    registry = build_registry(settings)
    queue = CloudTasksQueue.from_settings(
        queue_path=queue_path,
        worker_url=worker_url,
        service_account_email=settings.tasks_service_account,
        audience=settings.tasks_audience,
        dispatch_deadline=step_dispatch_deadlines(registry),
        queue_for=step_queue_paths(registry, settings.tasks_queues),
    )
    store = FirestoreStateStore.from_settings(
        project=settings.gcp_project,
        database=settings.firestore_database,
        collection=settings.firestore_collection,
    )
    io_manager: IOManager | None = None
    if settings.gcs_bucket:
        from infra.gcp.gcs_io import GcsIOManager

        io_manager = GcsIOManager.from_settings(
            bucket=settings.gcs_bucket, project=settings.gcp_project
        )
    return Backend(store=store, queue=queue, io_manager=io_manager, closers=(queue.close,))


def _aws_backend(settings: Settings) -> Backend:
    """DynamoDB state, SQS steps, S3 outputs; boto3 is imported here, not at cold start."""
    from infra.aws.dynamodb import DynamoDBStateStore
    from infra.aws.s3_io import S3IOManager
    from infra.aws.sqs import SqsTaskQueue

    if not settings.sqs_queue_url:
        raise ConfigurationError("RELAY_BACKEND=aws needs RELAY_SQS_QUEUE_URL (the step queue)")
    long_delays = None
    if settings.scheduler_role_arn:
        # Delays over SQS's 900 s become one-time schedules; the client is built lazily.
        from infra.aws.scheduler_delay import EventBridgeSchedulerDelay

        long_delays = EventBridgeSchedulerDelay.from_settings(
            role_arn=settings.scheduler_role_arn, group_name=settings.scheduler_group
        )
    return Backend(
        store=DynamoDBStateStore.from_settings(table_name=settings.dynamodb_table),
        queue=SqsTaskQueue.from_settings(queue_url=settings.sqs_queue_url, long_delays=long_delays),
        io_manager=(
            S3IOManager.from_settings(bucket=settings.s3_bucket) if settings.s3_bucket else None
        ),
    )


DISPATCH_MARGIN_SECONDS = 15.0
"""Added to a step's timeout for the worker's own work (load, claim, commit, enqueue)."""


def step_dispatch_deadlines(registry: SagaRegistry) -> Callable[[Message], float | None]:
    """How long a push queue should wait for the worker to handle ``message``.

    The timeout of the message's step of the message's saga (its compensation's for a
    compensate message) plus ``DISPATCH_MARGIN_SECONDS``. None (the queue's default) for a
    saga or step this process does not serve, or a format-1 message that names no saga.
    The sagas are imported on the first call, not at cold start.
    """
    lock = threading.Lock()
    table: dict[tuple[str, str, bool], float] = {}
    loaded = False

    def deadline(message: Message) -> float | None:
        nonlocal loaded
        with lock:
            if not loaded:
                for saga in registry.loaded():
                    for step in saga.steps.values():
                        table[(saga.name, step.name, False)] = step.timeout_seconds
                        table[(saga.name, step.name, True)] = step.compensation_timeout_seconds
                loaded = True
        if message.saga is None:
            return None
        key = (message.saga, message.step, message.action is Action.COMPENSATE)
        timeout = table.get(key)
        return None if timeout is None else timeout + DISPATCH_MARGIN_SECONDS

    return deadline


def step_queue_paths(
    registry: SagaRegistry, queue_paths: Mapping[str, str]
) -> Callable[[Message], str | None]:
    """Which Cloud Tasks queue carries a message: its saga's ``queue`` name, mapped.

    ``queue_paths`` is ``RELAY_TASKS_QUEUES`` (queue name to queue path). A saga whose
    queue name it lacks uses the default queue (``RELAY_TASKS_QUEUE``, answered as None),
    and so does a format-1 message that names no saga (only messages in flight across an
    upgrade; the engine names the saga in every message it writes). A name no served saga
    uses is logged once as a warning (a typo routes nothing). The sagas are imported on
    the first call, not at cold start.
    """
    lock = threading.Lock()
    table: dict[str, str | None] = {}
    loaded = False

    def load() -> None:
        for saga in registry.loaded():
            table[saga.name] = queue_paths.get(saga.queue)
        used = {saga.queue for saga in registry.loaded()}
        unused = sorted(set(queue_paths) - used)
        if unused:
            _log.warning(
                "RELAY_TASKS_QUEUES names queues no served saga uses: %s (served sagas use: %s)",
                ", ".join(unused),
                ", ".join(sorted(used)) or "none",
            )

    def queue_for(message: Message) -> str | None:
        nonlocal loaded
        with lock:
            if not loaded:
                load()
                loaded = True
        return None if message.saga is None else table.get(message.saga)

    return queue_for


def build_metrics(settings: Settings) -> BufferedMetricsSink:
    """The metrics sink of ``settings.backend`` (``RELAY_METRICS``; see ``Settings.metrics``).

    gcp: Cloud Monitoring, written by a background thread (google.cloud.monitoring and
    grpc are imported by its first flush, not here); aws: CloudWatch EMF lines on stdout;
    local and memory, or ``RELAY_METRICS=off``: none.
    """
    is_enabled = settings.metrics == "on" or (
        settings.metrics == "auto" and settings.backend in ("gcp", "aws")
    )
    if is_enabled and settings.backend == "gcp":
        if not settings.gcp_project:
            _metrics_log.warning("metrics off: RELAY_BACKEND=gcp without GOOGLE_CLOUD_PROJECT")
            return NullMetrics()
        from infra.gcp.monitoring import CloudMonitoringMetrics

        return CloudMonitoringMetrics.from_settings(project=settings.gcp_project)
    if is_enabled and settings.backend == "aws":
        from infra.aws.emf import EmfMetrics

        return EmfMetrics()
    return NullMetrics()


def build_executor(settings: Settings) -> AttemptExecutor:
    """The step executor; wrapped to inject faults only when ``RELAY_FAULTS`` has rules.

    Raises:
        ConfigurationError: ``RELAY_FAULTS`` is malformed.
    """
    plan = FaultPlan.parse(settings.faults)
    if plan.is_empty:
        return StepExecutor()
    _log.warning("RELAY_FAULTS is set: injecting %s", plan.describe())
    return FaultInjectingExecutor(StepExecutor(), plan)


def build_engine(settings: Settings) -> Engine:
    """A new engine for ``settings`` (tests build their own; functions use ``get_engine``)."""
    executor = build_executor(settings)
    backend = build_backend(settings)
    metrics = build_metrics(settings)
    return Engine(
        registry=build_registry(settings),
        store=backend.store,
        queue=backend.queue,
        io_manager=backend.io_manager,
        executor=executor,
        metrics=metrics,
        settings=RunnerSettings(inline_output_limit_bytes=settings.inline_output_limit_bytes),
        closers=[metrics.close, *backend.closers],  # closed last: it writes what is left
    )


_metrics_log = logging.getLogger("relay.metrics")
_lock = threading.Lock()


@functools.cache
def get_settings() -> Settings:
    """Settings of this process, read once per warm container."""
    return Settings.from_env()


_engine: Engine | None = None


def get_engine() -> Engine:
    """The engine of this warm container, built on first use (not at import)."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = _build_frozen(get_settings())
        return _engine


def _build_frozen(settings: Settings) -> Engine:
    """Build the engine with the cyclic collector off, then freeze what it built.

    Building imports the cloud clients (Firestore and Cloud Tasks on GCP, boto3 on AWS):
    hundreds of thousands of long-lived objects, during which the collector runs again
    and again and frees nothing. ``gc.freeze()`` moves them to the permanent generation
    so later collections skip them too. Only the build runs with the collector off,
    never a user's step.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return build_engine(settings)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def build_api_key_store(settings: Settings) -> ApiKeyStore:
    """The run API's key store on ``settings.backend``; its SDK is imported here, not at import.

    local: the ``api_keys`` table of ``relay.db``; memory: process memory; gcp: the
    ``<RELAY_FIRESTORE_COLLECTION>_api_keys`` collection; aws: items in the state table.
    """
    if settings.backend == "local":
        from infra.local.sqlite_api_keys import SQLiteApiKeyStore

        return SQLiteApiKeyStore.from_settings(settings.data_dir)
    if settings.backend == "memory":
        from infra.memory.api_keys import MemoryApiKeyStore

        return MemoryApiKeyStore()
    if settings.backend == "gcp":
        from infra.gcp.firestore_api_keys import FirestoreApiKeyStore

        return FirestoreApiKeyStore.from_settings(
            project=settings.gcp_project,
            database=settings.firestore_database,
            collection=f"{settings.firestore_collection}_api_keys",
        )
    if settings.backend == "aws":
        from infra.aws.dynamodb_api_keys import DynamoDBApiKeyStore

        return DynamoDBApiKeyStore.from_settings(table_name=settings.dynamodb_table)
    raise ConfigurationError(f"RELAY_BACKEND={settings.backend!r} has no API key store")


_api_keys: ApiKeyStore | None = None


def get_api_key_store() -> ApiKeyStore:
    """The key store of this warm container, built on the first keyed request."""
    global _api_keys
    with _lock:
        if _api_keys is None:
            _api_keys = build_api_key_store(get_settings())
        return _api_keys


_authenticator: Authenticator | None = None


def get_authenticator() -> Authenticator:
    """The run API's authenticator of this warm container (``RELAY_API_AUTH``), built once.

    Raises:
        ConfigurationError: a mode lacks its settings (the request is answered 503).
    """
    from functions.http.api_auth import authenticator_for

    global _authenticator
    with _lock:
        if _authenticator is None:
            # JWT key sets are cached inside it; the key store is built on first use.
            _authenticator = authenticator_for(get_settings(), api_keys=get_api_key_store)
        return _authenticator


def reset_engine() -> None:
    """Drop the cached settings, engine, key store and authenticator (tests, new env)."""
    global _engine, _api_keys, _authenticator
    with _lock:
        _authenticator = None
        if _engine is not None:
            _engine.close()
        _engine = None
        close = getattr(getattr(_api_keys, "database", None), "close", None)
        if close is not None:
            close()
        _api_keys = None
        get_settings.cache_clear()
