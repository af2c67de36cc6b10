"""The GCP task queue: one Cloud Tasks HTTP task per step message, pushed to the worker.

Cloud Tasks is a push queue: it POSTs each task to ``worker_url`` and retries it (with
the queue's backoff) until the worker answers 2xx or the queue's retry limit is reached.
There is nothing to poll, so this is a ``TaskQueue``, not a ``PullQueue``.

What each message becomes::

    name               <queue path>/tasks/<sha256(message_id) hex>-<readable id>
    http_request       POST worker_url, body = Message.to_json() (JSON, keys sorted),
                       Content-Type: application/json, OIDC token when configured
    schedule_time      Message.not_before (unset: deliver now)
    dispatch_deadline  the step's timeout (per message, else the constructor default),
                       clamped to what Cloud Tasks allows: 15 s .. 30 min

De-duplication: the task name is derived from the message id, so enqueuing the same
message again is refused by Cloud Tasks with ALREADY_EXISTS, which ``enqueue`` treats as
success. Cloud Tasks keeps a name reserved while the task exists and for about an hour
after it ran or was deleted (up to 9 days for queues made by queue.yaml): within that
window a re-enqueue of the same message id is a silent no-op; after it, the message is
delivered again. So de-duplication only saves work; the worker's re-drive rule (a
delivery that finds its step claimed or finished re-drives instead of re-running) is
what makes a duplicate harmless (DESIGN.md, "The step protocol").
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from core.domain.records import Message
from core.errors import ConfigurationError, QueueUnavailable, RequestRejected
from infra.gcp._errors import vendor_errors

if TYPE_CHECKING:
    from google.cloud.tasks_v2 import CloudTasksClient, Task

MIN_DISPATCH_DEADLINE_SECONDS: Final = 15.0
"""Cloud Tasks refuses an HTTP task whose dispatch deadline is shorter."""
MAX_DISPATCH_DEADLINE_SECONDS: Final = 1800.0
"""Cloud Tasks refuses an HTTP task whose dispatch deadline is longer (30 min)."""
EMULATOR_HOST_VARIABLE: Final = "CLOUD_TASKS_EMULATOR_HOST"
"""``host:port`` of a Cloud Tasks emulator; ``from_settings`` then talks plain gRPC to it."""

_QUEUE_PATH = re.compile(r"^projects/[^/]+/locations/[^/]+/queues/[A-Za-z0-9-]{1,100}$")
_NOT_IN_TASK_ID = re.compile(r"[^A-Za-z0-9_-]")
_READABLE_CHARS: Final = 400  # task ids may be 500 characters: 64 (hash) + 1 + 400


def task_id(message_id: str) -> str:
    """The Cloud Tasks task id of a message: ``<sha256 hex>-<readable message id>``.

    The full SHA-256 of the message id comes first: it is what makes the id unique, and
    it spreads names evenly over Cloud Tasks' key space (Cloud Tasks warns that
    sequential or timestamp-prefixed names raise latency). The readable part (the message
    id with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``, cut to 400
    characters) is only there for people reading logs and the console.
    """
    digest = hashlib.sha256(message_id.encode()).hexdigest()
    readable = _NOT_IN_TASK_ID.sub("_", message_id)[:_READABLE_CHARS]
    return f"{digest}-{readable}"


def check_queue_path(path: str, *, variable: str) -> str:
    """Return ``path`` if it is a Cloud Tasks queue path, else raise naming ``variable``.

    Raises:
        ConfigurationError: the path does not look like ``projects/P/locations/L/queues/Q``.
    """
    if not _QUEUE_PATH.match(path):
        raise ConfigurationError(
            f"Cloud Tasks queue {path!r} must look like "
            f"projects/PROJECT/locations/LOCATION/queues/QUEUE ({variable})"
        )
    return path


def clamp_dispatch_deadline(seconds: float) -> float:
    """``seconds`` moved into the range Cloud Tasks accepts (15 s .. 30 min)."""
    return min(max(seconds, MIN_DISPATCH_DEADLINE_SECONDS), MAX_DISPATCH_DEADLINE_SECONDS)


class CloudTasksQueue:
    """A ``TaskQueue`` on one Cloud Tasks queue, delivering HTTP tasks to the worker.

    ``enqueue`` creates one task per distinct message, one ``CreateTask`` call each
    (Cloud Tasks has no batch create). A transient failure (UNAVAILABLE,
    DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ABORTED) is retried within
    ``timeout_seconds``: the deterministic task name makes a retried create safe (if the
    first one landed, the retry gets ALREADY_EXISTS, which counts as success).

    Args:
        client: A ``google.cloud.tasks_v2.CloudTasksClient`` (thread-safe; shared).
        queue_path: ``projects/P/locations/L/queues/Q``, created by Terraform (or the
            test harness); this adapter never creates queues.
        worker_url: Where tasks are POSTed (the GCP worker endpoint).
        service_account_email: When set, every task carries an OIDC token for this
            service account (the worker verifies it). Cloud Tasks needs
            ``iam.serviceAccounts.actAs`` on it.
        audience: The token's audience; default the worker URL.
        dispatch_deadline_seconds: How long Cloud Tasks waits for the worker's answer
            when ``dispatch_deadline`` gives nothing for a message (clamped to 15 s ..
            30 min). Make it at least the step's timeout plus the worker's overhead.
        dispatch_deadline: Per message (e.g. from the step's ``timeout_seconds``), the
            deadline in seconds, or None for the default; clamped like the default.
        queue_for: Per message, the path of the queue that carries it (e.g. from the
            saga's ``queue`` name), or None for ``queue_path``. Paths it returns must be
            valid (``check_queue_path``); the composition root builds it from settings.
        timeout_seconds: The budget of one ``CreateTask``, retries included.
        owns_client: True when ``close`` should close the client (``from_settings``).

    Raises:
        ConfigurationError: the queue path is malformed, or an audience is given
            without a service account.
    """

    def __init__(
        self,
        client: CloudTasksClient,
        *,
        queue_path: str,
        worker_url: str,
        service_account_email: str | None = None,
        audience: str | None = None,
        dispatch_deadline_seconds: float = 600.0,
        dispatch_deadline: Callable[[Message], float | None] | None = None,
        queue_for: Callable[[Message], str | None] | None = None,
        timeout_seconds: float = 10.0,
        owns_client: bool = False,
    ) -> None:
        check_queue_path(queue_path, variable="RELAY_TASKS_QUEUE")
        if audience and not service_account_email:
            raise ConfigurationError(
                "an OIDC audience for Cloud Tasks needs a service account to sign the token "
                "(set RELAY_TASKS_SERVICE_ACCOUNT)"
            )
        self._client = client
        self._queue_path = queue_path
        self._worker_url = worker_url
        self._service_account = service_account_email
        self._audience = audience or worker_url
        self._default_deadline = clamp_dispatch_deadline(dispatch_deadline_seconds)
        self._deadline_for = dispatch_deadline
        self._queue_for = queue_for
        self._timeout = timeout_seconds
        self._owns_client = owns_client

    @classmethod
    def from_settings(
        cls,
        *,
        queue_path: str,
        worker_url: str,
        service_account_email: str | None = None,
        audience: str | None = None,
        dispatch_deadline_seconds: float = 600.0,
        dispatch_deadline: Callable[[Message], float | None] | None = None,
        queue_for: Callable[[Message], str | None] | None = None,
        emulator_host: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> CloudTasksQueue:
        """A queue with its own client, built here (``google.cloud.tasks_v2`` loads now).

        ``emulator_host`` (default ``CLOUD_TASKS_EMULATOR_HOST``) points the client at an
        emulator over an insecure gRPC channel, without credentials; otherwise the client
        uses Application Default Credentials.
        """
        from google.cloud import tasks_v2

        host = emulator_host or os.environ.get(EMULATOR_HOST_VARIABLE) or None
        if host:
            import grpc  # type: ignore[import-untyped]
            from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                CloudTasksGrpcTransport,
            )

            transport = CloudTasksGrpcTransport(host=host, channel=grpc.insecure_channel(host))
            client = tasks_v2.CloudTasksClient(transport=transport)
        else:
            client = tasks_v2.CloudTasksClient()
        return cls(
            client,
            queue_path=queue_path,
            worker_url=worker_url,
            service_account_email=service_account_email,
            audience=audience,
            dispatch_deadline_seconds=dispatch_deadline_seconds,
            dispatch_deadline=dispatch_deadline,
            queue_for=queue_for,
            timeout_seconds=timeout_seconds,
            owns_client=True,
        )

    def close(self) -> None:
        """Close the client's channel if ``from_settings`` built it (not an injected one)."""
        if self._owns_client:
            self._client.transport.close()  # type: ignore[no-untyped-call]

    @property
    def queue_path(self) -> str:
        """``projects/P/locations/L/queues/Q``: the default queue."""
        return self._queue_path

    def queue_path_for(self, message: Message) -> str:
        """The queue that carries ``message``: ``queue_for``'s answer, else the default."""
        if self._queue_for is not None:
            path = self._queue_for(message)
            if path:
                return path
        return self._queue_path

    def describe(self) -> Mapping[str, str]:
        """Project, location, queue, endpoint and worker URL, for logs and errors."""
        parts = self._queue_path.split("/")
        transport = getattr(self._client, "_transport", None)
        endpoint = str(getattr(transport, "_host", "") or getattr(self._client, "api_endpoint", ""))
        return {
            "project": parts[1],
            "location": parts[3],
            "queue": parts[5],
            "endpoint": endpoint or "cloudtasks.googleapis.com",
            "worker_url": self._worker_url,
        }

    def task_name(self, message: Message) -> str:
        """The full task name ``enqueue`` gives ``message``."""
        return f"{self.queue_path_for(message)}/tasks/{task_id(message.message_id)}"

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        """Create one HTTP task per distinct message; an existing task name is success.

        Raises:
            QueueUnavailable: Cloud Tasks stayed unreachable, slow or throttling for
                ``timeout_seconds`` (tasks created before the failure stay; enqueue
                again: their names make the repeats no-ops).
            ConfigurationError: the queue does not exist (or is disabled), or access is
                denied.
            RequestRejected: Cloud Tasks refused a task as invalid (a body over 1 MB, a
                ``not_before`` more than 30 days ahead).
        """
        unique: dict[str, Message] = {}
        for message in messages:
            unique.setdefault(message.message_id, message)
        for message in unique.values():
            self._create(message)

    # --- internals ---------------------------------------------------------------------

    def _task(self, message: Message) -> Task:
        from google.cloud import tasks_v2

        request = tasks_v2.HttpRequest(
            url=self._worker_url,
            http_method=tasks_v2.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=json.dumps(message.to_json(), sort_keys=True, separators=(",", ":")).encode(),
        )
        if self._service_account:
            request.oidc_token = tasks_v2.OidcToken(
                service_account_email=self._service_account, audience=self._audience
            )
        task = tasks_v2.Task(
            name=self.task_name(message),
            http_request=request,
            dispatch_deadline=datetime.timedelta(seconds=round(self._deadline(message))),
        )
        if message.not_before is not None:
            task.schedule_time = datetime.datetime.fromtimestamp(message.not_before, datetime.UTC)
        return task

    def _deadline(self, message: Message) -> float:
        if self._deadline_for is not None:
            seconds = self._deadline_for(message)
            if seconds is not None:
                return clamp_dispatch_deadline(seconds)
        return self._default_deadline

    def _create(self, message: Message) -> None:
        from google.api_core import exceptions as api_exceptions
        from google.api_core import retry as api_retry

        task = self._task(message)
        retry = api_retry.Retry(
            predicate=api_retry.if_exception_type(*_transient_errors()),
            initial=0.1,
            maximum=2.0,
            multiplier=2.0,
            timeout=self._timeout,
        )
        parent, _, name = task.name.partition("/tasks/")
        # ALREADY_EXISTS: this message is queued, or ran less than ~1 h ago.
        with (
            self._translated(f"creating task {name!r} in {parent}"),
            contextlib.suppress(api_exceptions.AlreadyExists),
        ):
            self._client.create_task(
                parent=parent,
                task=task,
                retry=retry,
                timeout=self._timeout,
            )

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except vendor_errors() as exc:
            raise self._engine_error(exc, action) from exc

    def _engine_error(self, exc: BaseException, action: str) -> Exception:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        where = ", ".join(f"{key}={value}" for key, value in self.describe().items())
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, api_exceptions.NotFound | api_exceptions.FailedPrecondition):
            return ConfigurationError(
                f"{action}: the queue does not exist or does not accept tasks ({detail}); "
                f"check RELAY_TASKS_QUEUE(S) and that the queue is created and running ({where})"
            )
        if isinstance(
            exc,
            api_exceptions.Forbidden
            | api_exceptions.Unauthorized
            | auth_exceptions.DefaultCredentialsError
            | auth_exceptions.RefreshError,
        ):
            return ConfigurationError(
                f"{action} was denied ({detail}); check the credentials, the "
                "roles/cloudtasks.enqueuer role and, with OIDC tokens, iam.serviceAccounts."
                f"actAs on the service account ({where})"
            )
        if isinstance(exc, api_exceptions.BadRequest):
            return RequestRejected(
                service="Cloud Tasks",
                operation=f"{action} ({where})",
                reason=detail,
                check="the task: its body at most 1 MB, scheduled at most 30 days ahead",
            )
        return QueueUnavailable(f"{action} failed ({detail}); {where}")


def _transient_errors() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as api_exceptions

    return (
        api_exceptions.ServiceUnavailable,
        api_exceptions.DeadlineExceeded,
        api_exceptions.TooManyRequests,  # RESOURCE_EXHAUSTED over gRPC
        api_exceptions.InternalServerError,
        api_exceptions.Aborted,
        api_exceptions.GatewayTimeout,
    )
