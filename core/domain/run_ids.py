"""Run ids and the key spaces they are derived from: the one place that names a run.

A run id says where it came from by its prefix, and the four spaces never overlap::

    r-<time><random>     a start without a key (fresh, time-ordered)
    k-<sha256[:32]>      a client's Idempotency-Key   (per saga)
    s-<sha256[:32]>      a schedule's scheduled time  (per saga and schedule)
    e-<sha256[:32]>      an event id                  (per saga)

Because the prefix differs, no client key (``schedule:nightly:...``, ``event:...``,
``s-...``, anything) can name the run a schedule or an event will start (issue 10,
finding 2: an anonymous caller could pre-create a future scheduled run with other input
and make the scheduler's start fail with 409). The client space keeps the derivation it
always had (``k-`` + sha256 of ``saga NUL key``), so runs started with a key before this
change are found again by the same key and by waits that correlate on it. Runs the engine
started from schedules and events before the change kept ``k-`` ids (from the keys
``schedule:<name>:<time>`` and ``event:<id>``); they stay readable by id, and the
engine's own starts no longer land in that space.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from core.domain.messages import RunId
from core.errors import InvalidIdempotencyKeyError

MAX_CLIENT_KEY_LENGTH: Final = 200
"""The longest client idempotency key, in characters (all printable ASCII)."""

RUN_ID_PATTERN: Final = re.compile(r"^[rkse]-[0-9a-f]{12,40}$")
"""Every run id the engine makes (and every one it made before key spaces existed)."""


class KeySpace(StrEnum):
    """Who chose a run's key; the value is the run id's prefix."""

    CLIENT = "k"
    SCHEDULE = "s"
    EVENT = "e"


def is_valid_client_key(key: str) -> bool:
    """True when ``key`` is 1 to ``MAX_CLIENT_KEY_LENGTH`` printable ASCII characters."""
    return 0 < len(key) <= MAX_CLIENT_KEY_LENGTH and all(" " <= char <= "~" for char in key)


@dataclass(frozen=True, slots=True)
class RunKey:
    """What makes a start idempotent: a key in one of the key spaces.

    Build one with ``client``, ``schedule`` or ``event``; ``text`` is what the run record
    keeps as its ``idempotency_key`` (the client's key as sent, or a readable
    ``schedule:<name>:<time>`` / ``event:<id>`` for the engine's own starts).
    """

    space: KeySpace
    parts: tuple[str, ...]

    @classmethod
    def client(cls, key: str) -> RunKey:
        """A caller's ``Idempotency-Key``.

        Raises:
            InvalidIdempotencyKeyError: the key is empty, longer than
                ``MAX_CLIENT_KEY_LENGTH`` or not printable ASCII (the HTTP layer answers
                400 before getting here).
        """
        if not is_valid_client_key(key):
            raise InvalidIdempotencyKeyError(max_length=MAX_CLIENT_KEY_LENGTH)
        return cls(KeySpace.CLIENT, (key,))

    @classmethod
    def schedule(cls, name: str, scheduled_time: str) -> RunKey:
        """One scheduled time (ISO-8601 UTC text) of schedule ``name``."""
        return cls(KeySpace.SCHEDULE, (name, scheduled_time))

    @classmethod
    def event(cls, event_id: str) -> RunKey:
        """The event with id ``event_id``."""
        return cls(KeySpace.EVENT, (event_id,))

    @property
    def text(self) -> str:
        """The key as stored on the run record (``idempotency_key``)."""
        if self.space is KeySpace.CLIENT:
            return self.parts[0]
        label = "schedule" if self.space is KeySpace.SCHEDULE else "event"
        return ":".join((label, *self.parts))

    def run_id(self, saga: str) -> RunId:
        """The run this key names for ``saga``: the same key always names the same run."""
        if self.space is KeySpace.CLIENT:
            # Unchanged since before key spaces: existing keyed runs keep their ids.
            material = f"{saga}\x00{self.parts[0]}"
        else:
            # Length-prefixed parts: no choice of names can make two keys collide.
            material = "\x00".join(
                (self.space.value, saga, *(f"{len(part)}:{part}" for part in self.parts))
            )
        digest = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()
        return RunId(f"{self.space.value}-{digest[:32]}")


def new_run_id(now: float) -> RunId:
    """A fresh, time-ordered run id (sorts by creation time as text)."""
    return RunId(f"r-{int(now * 1000):012x}{secrets.token_hex(8)}")


def run_id_for_client_key(saga: str, key: str) -> RunId:
    """The run a client's idempotency key names, for any text (no validation).

    Waits correlate on this (a correlation id names a run by the key that started it),
    and keys from before the 200-character limit must still find their runs.
    """
    return RunKey(KeySpace.CLIENT, (key,)).run_id(saga)
