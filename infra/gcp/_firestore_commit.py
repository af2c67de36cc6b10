"""Conditional Firestore commits for the state store: preconditions, outcomes, version cache.

A change becomes a list of :class:`Write` s, each carrying its precondition (must not
exist, or ``update_time`` must match), committed atomically by :func:`commit`. The
outcome is the writes' new update times, :data:`REJECTED` (a precondition failed and
nothing was written) or :class:`Transient` (unknown whether it landed).
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from core.errors import ConcurrencyConflict, StoreUnavailable
from infra.gcp._errors import transient_errors, translate, vendor_errors
from infra.gcp._firestore_docs import EXPIRES_AT, VERSION

if TYPE_CHECKING:
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.batch import WriteBatch
    from google.cloud.firestore_v1.client import Client
    from google.cloud.firestore_v1.document import DocumentReference


@dataclass(frozen=True, slots=True)
class Stored:
    """What is known of a stored document: its version and when it was last written.

    ``document`` is the full content when it was just read, None when the entry comes
    from the version cache. ``is_expiring`` (headers only): the run is stamped for TTL.
    """

    version: int
    update_time: datetime
    is_expiring: bool
    document: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One document a change writes (``data``) or only checks (``data`` None).

    ``expected`` is the stored version the change requires; 0 means "must not exist".
    ``what`` names the record in conflict messages.
    """

    ref: DocumentReference
    what: str
    expected: int
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a commit with its precondition, and what to cache once it committed.

    ``is_create``: the document must not exist; otherwise, when ``update_time`` is set,
    the stored one must equal it. ``version`` None means the write does not know the
    record's version (a TTL stamp), so the cache forgets the document instead.
    """

    ref: DocumentReference
    data: dict[str, Any]
    is_create: bool
    update_time: datetime | None
    version: int | None
    is_expiring: bool = False


@dataclass(frozen=True, slots=True)
class Transient:
    """A commit failed in a way that leaves unknown whether it was applied."""

    error: BaseException


class Rejected:
    """A commit precondition failed: nothing was written."""


REJECTED: Final = Rejected()


class VersionCache:
    """(version, update_time) of documents this process recently read or wrote.

    A worker loads a run and then claims and commits one of its steps; remembering what
    the load saw lets those writes be fenced by ``update_time`` without reading again. A
    stale entry is harmless: the precondition fails, the store reads the document and
    decides from its real version. Least recently used entries are dropped past ``size``.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Stored] = OrderedDict()

    def get(self, path: str) -> Stored | None:
        """The entry for the document at ``path``, if any."""
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None:
                self._entries.move_to_end(path)
            return entry

    def put(self, path: str, entry: Stored) -> None:
        """Remember ``entry`` (without the document content) for ``path``."""
        with self._lock:
            self._entries[path] = replace(entry, document=None)
            self._entries.move_to_end(path)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def discard(self, path: str) -> None:
        """Forget ``path``: its version is no longer known."""
        with self._lock:
            self._entries.pop(path, None)

    def remember(self, writes: Sequence[Write], update_times: Sequence[datetime]) -> None:
        """Record the outcome of a committed list of writes."""
        for write, update_time in zip(writes, update_times, strict=True):
            if write.version is None:
                self.discard(write.ref.path)
            else:
                self.put(write.ref.path, Stored(write.version, update_time, write.is_expiring))


def commit(
    client: Client,
    writes: Sequence[Write],
    *,
    timeout_seconds: float,
    action: str,
    where: Mapping[str, str],
) -> list[datetime] | Rejected | Transient:
    """Commit ``writes`` atomically, once: their update times, ``REJECTED`` or ``Transient``.

    Never retried blindly (the client library would retry UNAVAILABLE): a commit whose
    first attempt landed would then fail its own preconditions. Callers read and decide.

    Raises:
        ConfigurationError, RequestRejected, StoreUnavailable: other Google errors, translated.
    """
    from google.api_core import exceptions as api_exceptions

    batch: WriteBatch = client.batch()
    for write in writes:
        if write.is_create:
            batch.create(write.ref, write.data)
        elif write.update_time is None:
            batch.update(write.ref, write.data)
        else:
            option = client.write_option(last_update_time=write.update_time)
            batch.update(write.ref, write.data, option=option)
    try:
        results = batch.commit(retry=None, timeout=timeout_seconds)
    except (api_exceptions.FailedPrecondition, api_exceptions.AlreadyExists):
        return REJECTED
    except transient_errors() as exc:
        return Transient(exc)
    except vendor_errors() as exc:
        raise translate(exc, action=action, where=where) from exc
    return [result.update_time for result in results]


def backoff() -> Iterator[float]:
    """Delays between attempts: 50 ms doubling to 1 s, with full jitter; never ends."""
    delay = 0.05
    while True:
        yield random.uniform(0, delay)
        delay = min(delay * 2, 1.0)


def sleep_or_give_up(
    delay: float, deadline: float, outcome: Transient, *, action: str, where: Mapping[str, str]
) -> None:
    """Wait ``delay`` before the next attempt, or raise ``StoreUnavailable`` past ``deadline``."""
    if time.monotonic() + delay > deadline:
        error = translate(outcome.error, action=action, where=where)
        if not isinstance(error, StoreUnavailable):  # pragma: no cover - transient errors map so
            error = StoreUnavailable(str(error))
        raise error from outcome.error
    time.sleep(delay)


def entry_of(snapshot: DocumentSnapshot[Any]) -> Stored:
    """What a just-read snapshot of an existing document says about it."""
    document = snapshot.to_dict() or {}
    return Stored(
        version=int(document.get(VERSION, 0)),
        update_time=snapshot.update_time,
        is_expiring=document.get(EXPIRES_AT) is not None,
        document=document,
    )


def holds(stored: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """True when every field of ``data`` has that value in ``stored``."""
    return all(key in stored and stored[key] == value for key, value in data.items())


def has_landed(targets: Sequence[Target], stored: Mapping[str, Stored | None]) -> bool:
    """True when every record the change writes is stored exactly as the change has it."""
    for target in targets:
        if target.data is None:
            continue
        entry = stored.get(target.ref.path)
        if entry is None or entry.document is None or not holds(entry.document, target.data):
            return False
    return True


def verify(run_id: str, targets: Sequence[Target], stored: Mapping[str, Stored | None]) -> None:
    """Raise ``ConcurrencyConflict`` naming the first target whose stored version differs."""
    for target in targets:
        entry = stored.get(target.ref.path)
        found = 0 if entry is None else entry.version
        if found != target.expected:
            expected_text = "no record" if target.expected == 0 else f"version {target.expected}"
            found_text = "no record" if entry is None else f"version {found}"
            raise ConcurrencyConflict(
                run_id=run_id,
                detail=f"{target.what}: expected {expected_text}, found {found_text}",
            )
