"""The audit trail of a run: who asked for an operator action (retry, cancel), when, from where.

Entries are appended to ``RunRecord.audit`` in the same conditional write as the action
they record, so the history shows exactly the actions that took effect. Adapters store
the trail as JSON text (``audit_to_json`` / ``audit_from_json``), the same on every backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

MAX_AUDIT_ENTRIES: Final = 100
"""A run keeps its latest entries only, so a retry loop cannot grow a record without bound."""
MAX_FIELD_CHARS: Final = 200
"""Actors and sources are clipped: they come from credentials and headers."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action on a run.

    Attributes:
        action: What was done (``retry``, ``cancel``).
        actor: Who asked: the authenticated principal (``hmac:local``, ``oidc:<email>``,
            ``cli:<user>``); never a credential.
        source: Where from: the client address, or ``cli`` for a command on the machine.
        at: When, in epoch seconds.
    """

    action: str
    actor: str
    source: str
    at: float

    @classmethod
    def of(cls, *, action: str, actor: str, source: str, at: float) -> AuditEntry:
        """An entry with printable fields clipped to ``MAX_FIELD_CHARS``."""
        return cls(action=action, actor=_clip(actor), source=_clip(source), at=float(at))

    def to_json(self) -> dict[str, str | float]:
        """The entry as a JSON object (the run view's ``audit`` items carry ISO times)."""
        return {"action": self.action, "actor": self.actor, "source": self.source, "at": self.at}


def appended(trail: tuple[AuditEntry, ...], entry: AuditEntry | None) -> tuple[AuditEntry, ...]:
    """``trail`` with ``entry`` at the end (unchanged for None), keeping the latest entries."""
    if entry is None:
        return trail
    return (*trail, entry)[-MAX_AUDIT_ENTRIES:]


def audit_to_json(trail: tuple[AuditEntry, ...]) -> str | None:
    """The stored text of ``trail``; None when empty (no column, field or attribute)."""
    if not trail:
        return None
    return json.dumps([entry.to_json() for entry in trail], separators=(",", ":"))


def audit_from_json(text: str | None) -> tuple[AuditEntry, ...]:
    """The trail stored as ``text`` (None, or absent before audits existed: empty)."""
    if not text:
        return ()
    return tuple(
        AuditEntry(
            action=str(item["action"]),
            actor=str(item["actor"]),
            source=str(item["source"]),
            at=float(item["at"]),
        )
        for item in json.loads(text)
    )


def _clip(text: str) -> str:
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable[:MAX_FIELD_CHARS]
