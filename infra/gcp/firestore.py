"""The Google Cloud state store: run headers and step records as Firestore documents.

Every mutation is one atomic Firestore commit whose writes carry preconditions: a new
record is a ``create`` (the document must not exist), a changed record an ``update``
that requires the document's ``update_time`` to be the one observed together with the
record's previous ``version``, and a version check a no-op write with the same
precondition (Firestore does not move ``update_time`` for a write that changes nothing).
If any precondition fails, nothing is written. ``README.md`` has the layout, the reads
and writes of each operation, and why this is not a read-write transaction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from core.domain.records import (
    Message,
    RunId,
    RunRecord,
    RunSnapshot,
    StateChange,
    StepName,
    StepRecord,
)
from core.domain.status import RunStatus
from core.errors import ConcurrencyConflict
from core.ports.state_store import check_run_ids
from infra.gcp._errors import google_errors, transient_errors
from infra.gcp._firestore_commit import (
    Rejected,
    Stored,
    Target,
    VersionCache,
    Write,
    backoff,
    commit,
    entry_of,
    has_landed,
    holds,
    sleep_or_give_up,
    verify,
)
from infra.gcp._firestore_docs import (
    EXPIRES_AT,
    STEPS_SUBCOLLECTION,
    VERSION,
    document_id,
    expiry_timestamp,
    run_from_document,
    run_to_document,
    step_from_document,
    step_to_document,
)

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.client import Client
    from google.cloud.firestore_v1.document import DocumentReference

DEFAULT_COLLECTION: Final = "relay_runs"
DEFAULT_RETENTION_SECONDS: Final = 30 * 24 * 3600.0
_REJECTED_COMMITS_LIMIT: Final = 5
_VERSION_CACHE_SIZE: Final = 10_000


class FirestoreStateStore:
    """A ``StateStore`` in Firestore (native mode); ``delivers_outbox`` is False.

    Args:
        client: A ``google.cloud.firestore.Client`` (created while
            ``FIRESTORE_EMULATOR_HOST`` is set to talk to the emulator).
        collection: The top-level collection of run headers.
        retention_seconds: How long a finished run is kept: its header and step documents
            get ``expires_at`` (the Firestore TTL field) when the run reaches a terminal
            status. None keeps finished runs and saves the stamping writes.
        timeout_seconds: Budget of one operation, retries of transient errors included;
            past it the operation raises ``StoreUnavailable``.
    """

    def __init__(
        self,
        client: Client,
        *,
        collection: str = DEFAULT_COLLECTION,
        retention_seconds: float | None = DEFAULT_RETENTION_SECONDS,
        timeout_seconds: float = 10.0,
    ) -> None:
        from google.api_core.retry import Retry, if_exception_type

        self._client = client
        self._collection = collection
        self._runs = client.collection(collection)
        self._retention = retention_seconds
        self._timeout = timeout_seconds
        # Reads are idempotent: the client library may retry them within the budget.
        self._read_retry: Retry = Retry(
            predicate=if_exception_type(*transient_errors()),
            initial=0.05,
            maximum=1.0,
            multiplier=2.0,
            timeout=timeout_seconds,
        )
        self._seen = VersionCache(_VERSION_CACHE_SIZE)

    @classmethod
    def from_settings(
        cls,
        *,
        project: str | None = None,
        database: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        retention_seconds: float | None = DEFAULT_RETENTION_SECONDS,
    ) -> FirestoreStateStore:
        """A store on ``database`` of ``project`` with Application Default Credentials.

        ``FIRESTORE_EMULATOR_HOST``, when set, points the client at the emulator.
        """
        from google.cloud import firestore

        client = firestore.Client(project=project, database=database)
        return cls(client, collection=collection, retention_seconds=retention_seconds)

    @property
    def delivers_outbox(self) -> bool:
        """False: a Firestore commit cannot enqueue a Cloud Task; the engine does after it."""
        return False

    def describe(self) -> Mapping[str, str]:
        """Project, database, collection and endpoint, for logs and errors."""
        emulator = getattr(self._client, "_emulator_host", None)
        return {
            "backend": "firestore",
            "project": str(self._client.project),
            "database": str(getattr(self._client, "_database", "(default)")),
            "collection": self._collection,
            "endpoint": f"emulator {emulator}" if emulator else "firestore.googleapis.com",
        }

    # -- create --------------------------------------------------------------------

    def create_run(
        self, *, run: RunRecord, steps: Sequence[StepRecord], outbox: Sequence[Message]
    ) -> tuple[RunRecord, bool]:
        """Create the header and every step document in one commit, unless the run exists.

        Each document is written with a must-not-exist precondition, so an existing run
        fails the whole commit; its header is then read and returned. ``outbox`` is not
        delivered (``delivers_outbox`` is False).

        Returns:
            The stored header and whether this call created it.

        Raises:
            ConcurrencyConflict: step documents of this run id exist without a header.
            StoreUnavailable: Firestore stayed unreachable for the whole timeout.
        """
        check_run_ids(run.run_id, [run], steps)
        expires_at = self._expiry_for(run)
        header_ref = self._run_ref(run.run_id)
        header = run_to_document(run, expires_at=expires_at)
        writes = [
            Write(
                header_ref,
                header,
                is_create=True,
                update_time=None,
                version=run.version,
                is_expiring=expires_at is not None,
            )
        ]
        for step in steps:
            doc = step_to_document(step, expires_at=expires_at)
            ref = self._step_ref(run.run_id, step.name)
            writes.append(Write(ref, doc, is_create=True, update_time=None, version=step.version))
        action = f"create run {run.run_id!r}"
        deadline = time.monotonic() + self._timeout
        is_ambiguous = False
        snapshot: DocumentSnapshot[DocumentReference] | None = None
        for delay in backoff():
            outcome = commit(
                self._client,
                writes,
                timeout_seconds=self._timeout,
                action=action,
                where=self.describe(),
            )
            if isinstance(outcome, list):
                self._seen.remember(writes, outcome)
                return run, True
            if isinstance(outcome, Rejected):
                snapshot = self._get(header_ref, action=action)
                break
            # Unknown whether the commit landed: find out before trying again.
            is_ambiguous = True
            sleep_or_give_up(delay, deadline, outcome, action=action, where=self.describe())
            snapshot = self._get(header_ref, action=action)
            if snapshot.exists:
                break
        if snapshot is None or not snapshot.exists:
            raise ConcurrencyConflict(
                run_id=run.run_id,
                detail="step documents of this run id exist without a run header",
            )
        stored = snapshot.to_dict() or {}
        self._seen.put(header_ref.path, entry_of(snapshot))
        if is_ambiguous and holds(stored, header):
            return run, True  # our own commit landed before its response was lost
        return run_from_document(stored), False

    # -- read ----------------------------------------------------------------------

    def load_run(self, *, run_id: RunId) -> RunSnapshot | None:
        """Read the header, then every step document as of the header's read time.

        Two requests (a get, and a query at the header's ``read_time`` so the snapshot is
        consistent); 1 + max(1, number of steps) billed document reads.
        """
        header_ref = self._run_ref(run_id)
        with google_errors(f"load run {run_id!r}", self.describe()):
            header = header_ref.get(retry=self._read_retry, timeout=self._timeout)
            if not header.exists:
                return None
            step_snapshots = list(
                header_ref.collection(STEPS_SUBCOLLECTION).stream(
                    retry=self._read_retry, timeout=self._timeout, read_time=header.read_time
                )
            )
        self._seen.put(header_ref.path, entry_of(header))
        steps: dict[StepName, StepRecord] = {}
        for snapshot in step_snapshots:
            record = step_from_document(snapshot.to_dict() or {})
            steps[record.name] = record
            self._seen.put(snapshot.reference.path, entry_of(snapshot))
        return RunSnapshot(
            run=run_from_document(header.to_dict() or {}), steps=dict(sorted(steps.items()))
        )

    # -- apply ---------------------------------------------------------------------

    def apply(self, *, change: StateChange) -> None:
        """Write ``change`` in one commit if every version precondition holds.

        The stored versions come from what this process last read or wrote (the version
        cache) or from one batched read of the documents it lacks; a mismatch raises at
        once. Otherwise the commit's ``update_time`` preconditions make the write
        conditional on nothing having changed since. When one fails, the documents are
        read again: a changed version raises, an unchanged one (the document was touched
        without changing the record, e.g. a TTL stamp) retries the commit.

        Raises:
            ConcurrencyConflict: a record or check no longer matches; nothing was written.
            StoreUnavailable: Firestore stayed unreachable for the whole timeout.
        """
        run_id = change.run_id
        check_run_ids(run_id, [change.run] if change.run is not None else [], change.steps)
        targets = self._targets(change)
        action = f"update run {run_id!r}"
        deadline = time.monotonic() + self._timeout
        is_fresh = is_ambiguous = False
        rejected = 0
        for delay in backoff():
            stored = self._stored(targets, is_fresh=is_fresh)
            if is_ambiguous and has_landed(targets, stored):
                return  # an earlier attempt of this call committed; its response was lost
            verify(run_id, targets, stored)
            writes = self._writes(change, targets, stored)
            outcome = commit(
                self._client,
                writes,
                timeout_seconds=self._timeout,
                action=action,
                where=self.describe(),
            )
            if isinstance(outcome, list):
                self._seen.remember(writes, outcome)
                return
            is_fresh = True  # decide again from what is really stored
            if isinstance(outcome, Rejected):
                rejected += 1
                if rejected == _REJECTED_COMMITS_LIMIT:
                    raise ConcurrencyConflict(
                        run_id=run_id,
                        detail=f"documents kept changing over {rejected} commit attempts",
                    )
                continue
            is_ambiguous = True
            sleep_or_give_up(delay, deadline, outcome, action=action, where=self.describe())
        raise AssertionError("unreachable: backoff() never ends")  # pragma: no cover

    # -- queries -------------------------------------------------------------------

    def list_runs(
        self,
        *,
        saga: str | None = None,
        statuses: Sequence[RunStatus] | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Run headers, newest first (ties by run id, descending), filtered by saga/status.

        One query, served by the composite indexes in ``firestore.indexes.json``.
        """
        from google.cloud.firestore_v1 import FieldFilter, Query

        if limit <= 0 or (statuses is not None and not statuses):
            return []
        query: Any = self._runs
        if saga is not None:
            query = query.where(filter=FieldFilter("saga", "==", saga))
        if statuses is not None:
            values = sorted({RunStatus(s).value for s in statuses})
            query = query.where(filter=FieldFilter("status", "in", values))
        query = (
            query.order_by("created_at", direction=Query.DESCENDING)
            .order_by("run_id", direction=Query.DESCENDING)
            .limit(limit)
        )
        with google_errors("list runs", self.describe()):
            snapshots = list(query.stream(retry=self._read_retry, timeout=self._timeout))
        return [run_from_document(snapshot.to_dict() or {}) for snapshot in snapshots]

    def count_runs_by_status(self, *, saga: str | None = None) -> Mapping[RunStatus, int]:
        """How many runs are in each status: one count aggregation query per status.

        Each costs one read per 1,000 matching index entries (at least one).
        """
        from google.cloud.firestore_v1 import FieldFilter

        counts = dict.fromkeys(RunStatus, 0)
        base: Any = self._runs
        if saga is not None:
            base = base.where(filter=FieldFilter("saga", "==", saga))
        with google_errors("count runs", self.describe()):
            for status in RunStatus:
                query = base.where(filter=FieldFilter("status", "==", status.value))
                result = query.count(alias="n").get(retry=self._read_retry, timeout=self._timeout)
                counts[status] = int(result[0][0].value)
        return counts

    # -- internals -----------------------------------------------------------------

    def _run_ref(self, run_id: str) -> DocumentReference:
        ref: DocumentReference = self._runs.document(document_id(run_id, kind="run id"))
        return ref

    def _step_ref(self, run_id: str, name: str) -> DocumentReference:
        steps = self._run_ref(run_id).collection(STEPS_SUBCOLLECTION)
        ref: DocumentReference = steps.document(document_id(name, kind="step name"))
        return ref

    def _expiry_for(self, run: RunRecord) -> datetime | None:
        if self._retention is None or not run.status.is_terminal:
            return None
        return expiry_timestamp(run.updated_at + self._retention)

    def _get(self, ref: DocumentReference, *, action: str) -> DocumentSnapshot[DocumentReference]:
        with google_errors(action, self.describe()):
            return ref.get(retry=self._read_retry, timeout=self._timeout)

    def _targets(self, change: StateChange) -> list[Target]:
        """The documents ``change`` writes (header first), then the ones it only checks."""
        targets: list[Target] = []
        new_expiry: datetime | None = None
        if change.run is not None:
            run = change.run
            new_expiry = self._expiry_for(run)
            doc = run_to_document(run, expires_at=new_expiry)
            targets.append(Target(self._run_ref(run.run_id), "run header", run.version - 1, doc))
        for step in change.steps:
            doc = step_to_document(step, expires_at=new_expiry)
            if change.run is None:
                del doc[EXPIRES_AT]  # only a header write moves the TTL stamp
            ref = self._step_ref(step.run_id, step.name)
            targets.append(Target(ref, f"step {step.name!r}", step.version - 1, doc))
        for check in change.checks:
            ref = self._step_ref(change.run_id, check.step)
            targets.append(Target(ref, f"checked step {check.step!r}", check.version, None))
        return targets

    def _stored(self, targets: Sequence[Target], *, is_fresh: bool) -> dict[str, Stored | None]:
        """What is stored for each target: from the cache where possible, else one read."""
        stored: dict[str, Stored | None] = {}
        to_read: dict[str, DocumentReference] = {}
        for target in targets:
            path = target.ref.path
            if is_fresh:
                to_read[path] = target.ref
            elif target.expected == 0 and target.data is not None:
                stored[path] = None  # a create: its precondition is the whole check
            else:
                cached = self._seen.get(path)
                if cached is not None and cached.version == target.expected:
                    stored[path] = cached
                else:
                    to_read[path] = target.ref
        if to_read:
            with google_errors("read documents", self.describe()):
                snapshots = list(
                    self._client.get_all(
                        list(to_read.values()), retry=self._read_retry, timeout=self._timeout
                    )
                )
            for snapshot in snapshots:
                path = snapshot.reference.path
                entry = entry_of(snapshot) if snapshot.exists else None
                stored[path] = entry
                if entry is None:
                    self._seen.discard(path)
                else:
                    self._seen.put(path, entry)
        return stored

    def _writes(
        self, change: StateChange, targets: Sequence[Target], stored: Mapping[str, Stored | None]
    ) -> list[Write]:
        """The commit's writes, each with its precondition, in target order."""
        stamp_value, stamp_refs = self._stamp_for(change, targets, stored)
        writes: list[Write] = []
        written: set[str] = set()
        for target in targets:
            path = target.ref.path
            if path in written:
                continue  # a check of a step the change also writes: one precondition
            written.add(path)
            entry = stored.get(path)
            update_time = None if entry is None else entry.update_time
            if target.data is not None:
                if EXPIRES_AT in target.data:
                    is_expiring = target.data[EXPIRES_AT] is not None
                else:
                    is_expiring = entry is not None and entry.is_expiring
                writes.append(
                    Write(
                        target.ref,
                        target.data,
                        is_create=target.expected == 0,
                        update_time=update_time,
                        version=target.data[VERSION],
                        is_expiring=is_expiring,
                    )
                )
                continue
            # A check: rewrite the version it must have, which changes nothing (and so
            # keeps update_time) unless the step's TTL stamp moves with the header.
            data: dict[str, Any] = {VERSION: target.expected}
            if stamp_refs:
                data[EXPIRES_AT] = stamp_value
            writes.append(
                Write(
                    target.ref,
                    data,
                    is_create=False,
                    update_time=update_time,
                    version=target.expected,
                )
            )
        for ref in stamp_refs:
            if ref.path not in written:
                stamp = {EXPIRES_AT: stamp_value}
                writes.append(Write(ref, stamp, is_create=False, update_time=None, version=None))
        return writes

    def _stamp_for(
        self, change: StateChange, targets: Sequence[Target], stored: Mapping[str, Stored | None]
    ) -> tuple[datetime | None, list[DocumentReference]]:
        """The steps' new ``expires_at`` when the header enters or leaves a terminal status.

        Firestore TTL deletes a document but never its subcollections, so every step
        document carries the header's stamp. Finding them costs one query (one read per
        step), only in the change that finishes a run (or re-opens it with ``retry``).
        """
        if change.run is None or self._retention is None:
            return None, []
        header = targets[0]
        assert header.data is not None
        new_expiry: datetime | None = header.data[EXPIRES_AT]
        entry = stored.get(header.ref.path)
        was_expiring = entry is not None and entry.is_expiring
        if (new_expiry is not None) == was_expiring:
            return None, []
        with google_errors("list step documents", self.describe()):
            refs = [
                snapshot.reference
                for snapshot in header.ref.collection(STEPS_SUBCOLLECTION).stream(
                    retry=self._read_retry, timeout=self._timeout
                )
            ]
        return new_expiry, refs
