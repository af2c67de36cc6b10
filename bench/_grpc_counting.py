"""Counting Google API calls at the gRPC level, by the engine's store and queue operation.

``RpcCounter`` is a client interceptor for the Firestore and Cloud Tasks channels (the
clients are built on intercepted channels, nothing is stubbed); ``LabelledStore`` and
``LabelledQueue`` wrap the adapters so each call is counted under the operation that
made it (start, load, claim, commit, enqueue). Used by ``bench/gcp_calls.py``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]

from bench._gcp_emulators import PROJECT
from core.domain.records import Message, RunId, RunRecord, RunSnapshot, StateChange, StepRecord
from core.domain.status import RunStatus, StepStatus
from core.ports.state_store import StateStore
from core.ports.task_queue import TaskQueue

if TYPE_CHECKING:
    from google.cloud import firestore, tasks_v2


# -- counting at the gRPC level ----------------------------------------------------------


class _CountingStream:
    """A server-streaming call whose responses are counted as they are read."""

    def __init__(self, call: Any, on_response: Callable[[Any], None]) -> None:
        self._call = call
        self._on_response = on_response

    def __iter__(self) -> _CountingStream:
        return self

    def __next__(self) -> Any:
        response = next(self._call)
        self._on_response(response)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class RpcCounter(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Counts every RPC into the tally of the current ``label`` and keeps created tasks.

    Keys of a tally: ``rpc <Method>``, ``docs read`` (documents returned), ``billed reads``
    (Firestore bills a query that returns nothing as one read, and a missing document of
    a batch get as one), ``docs written`` (writes of committed ``Commit`` s), ``rejected
    commits`` (a precondition failed: nothing written).
    """

    def __init__(self) -> None:
        self.label = "setup"
        self.tallies: dict[str, Counter[str]] = defaultdict(Counter)
        self.created_tasks: list[Any] = []

    @contextmanager
    def labelled(self, label: str) -> Iterator[None]:
        """Attribute the calls made inside the block to ``label``."""
        previous, self.label = self.label, label
        try:
            yield
        finally:
            self.label = previous

    def take(self) -> dict[str, Counter[str]]:
        """The tallies since the last ``take``, by label; counting starts afresh."""
        taken, self.tallies = self.tallies, defaultdict(Counter)
        return dict(taken)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """Count a unary call; a committed Commit adds its writes, a CreateTask its task."""
        method = _method_name(details)
        tally = self.tallies[self.label]
        tally[f"rpc {method}"] += 1
        outcome = continuation(details, request)
        is_ok = outcome.exception() is None
        if method == "Commit":
            if is_ok:
                tally["docs written"] += len(request.writes)
                for write in request.writes:
                    tally[f"written: {_write_kind(write)}"] += 1
            else:
                tally["rejected commits"] += 1
        elif method == "CreateTask":
            if is_ok:
                self.created_tasks.append(request.task)
            elif outcome.exception().code() == grpc.StatusCode.ALREADY_EXISTS:
                tally["CreateTask already exists"] += 1
        return outcome

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        """Count a streaming read and, as they arrive, the documents it returns."""
        method = _method_name(details)
        tally = self.tallies[self.label]
        tally[f"rpc {method}"] += 1
        if method == "RunQuery":
            tally["billed reads"] += 1  # the minimum charge; the first document is in it
            seen = [0]

            def on_query_response(response: Any) -> None:
                if "document" in response:
                    seen[0] += 1
                    tally["docs read"] += 1
                    if seen[0] > 1:
                        tally["billed reads"] += 1

            return _CountingStream(continuation(details, request), on_query_response)
        if method == "BatchGetDocuments":

            def on_get_response(response: Any) -> None:
                if "found" in response:
                    tally["docs read"] += 1
                    tally["billed reads"] += 1
                elif "missing" in response:
                    tally["billed reads"] += 1

            return _CountingStream(continuation(details, request), on_get_response)
        return continuation(details, request)


def _write_kind(write: Any) -> str:
    """What one write of a Commit is: a record, a version check, or a TTL stamp."""
    fields = set(write.update_mask.field_paths) if "update_mask" in write else set()
    if not fields:
        return "record"
    if fields == {"expires_at"}:
        return "TTL stamp"
    if fields <= {"version", "expires_at"}:
        return "version check"  # a no-op write that carries an update_time precondition
    return "record"


def _method_name(details: Any) -> str:
    method = details.method
    text = method.decode() if isinstance(method, bytes) else str(method)
    return text.rsplit("/", 1)[-1]


def counting_firestore_client(host: str, counter: RpcCounter) -> firestore.Client:
    """A Firestore client on the emulator whose channel goes through ``counter``."""
    from google.cloud import firestore

    class CountingClient(firestore.Client):
        def _emulator_channel(self, transport: Any) -> Any:
            channel = super()._emulator_channel(transport)  # type: ignore[no-untyped-call]
            return grpc.intercept_channel(channel, counter)

    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    try:
        return CountingClient(project=PROJECT)
    finally:
        if previous is None:
            del os.environ["FIRESTORE_EMULATOR_HOST"]
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous


def counting_tasks_client(host: str, counter: RpcCounter) -> tasks_v2.CloudTasksClient:
    """A Cloud Tasks client on the emulator whose channel goes through ``counter``."""
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    channel = grpc.intercept_channel(grpc.insecure_channel(host), counter)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(host=host, channel=channel))


# -- attributing calls to the engine's operations --------------------------------------


def is_claim(change: StateChange) -> bool:
    """A claim takes a lease on a step and enqueues nothing."""
    return (
        not change.outbox
        and bool(change.steps)
        and all(
            step.lease_until is not None
            and step.status in (StepStatus.RUNNING, StepStatus.COMPENSATING)
            for step in change.steps
        )
    )


class LabelledStore:
    """A ``StateStore`` that labels the calls of each operation of the store it wraps."""

    def __init__(self, inner: StateStore, counter: RpcCounter) -> None:
        self._inner = inner
        self._counter = counter

    @property
    def delivers_outbox(self) -> bool:
        return self._inner.delivers_outbox

    def create_run(
        self, *, run: RunRecord, steps: Sequence[StepRecord], outbox: Sequence[Message]
    ) -> tuple[RunRecord, bool]:
        with self._counter.labelled("start"):
            return self._inner.create_run(run=run, steps=steps, outbox=outbox)

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        with self._counter.labelled("load"):
            return self._inner.load_run(run_id=run_id)

    def apply(self, *, change: StateChange) -> None:
        with self._counter.labelled("claim" if is_claim(change) else "commit"):
            self._inner.apply(change=change)

    def list_runs(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        with self._counter.labelled("other"):
            return self._inner.list_runs(saga=saga, statuses=statuses, limit=limit)

    def count_runs_by_status(self, *, saga: str | None = None) -> Mapping[RunStatus, int]:
        with self._counter.labelled("other"):
            return self._inner.count_runs_by_status(saga=saga)

    def describe(self) -> Mapping[str, str]:
        return self._inner.describe()


class LabelledQueue:
    """A ``TaskQueue`` whose enqueues are labelled (``start`` when a run start enqueues)."""

    def __init__(self, inner: TaskQueue, counter: RpcCounter) -> None:
        self._inner = inner
        self._counter = counter

    def enqueue(self, *, messages: Sequence[Message]) -> None:
        label = "start" if self._counter.label == "start" else "enqueue"
        with self._counter.labelled(label):
            self._inner.enqueue(messages=messages)

    def describe(self) -> Mapping[str, str]:
        return self._inner.describe()
