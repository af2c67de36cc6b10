"""Demo mail relay: an outbox of messages, one per (idempotency key, kind).

A demo stand-in for an external email API. Sends are keyed by the saga step's
idempotency key and the kind of message, because a redelivered step must not mail the
customer twice, while one step may legitimately send two different kinds (a confirmation
and, when compensating, a cancellation) under its one key.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from functions.demo_services import db

SERVICE = "emails"
ADDRESS_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
"""A deliberately simple address check (something@domain.tld); the relay decides the rest."""


@dataclass(frozen=True, slots=True)
class Email:
    """One outbox entry.

    ``status`` is ``sent``, or ``suppressed`` (the sender gave up before it was sent, so
    a late ``send`` of that kind under that key delivers nothing).
    """

    key: str
    kind: str
    recipient: str
    subject: str
    message_id: str
    status: str

    @property
    def is_sent(self) -> bool:
        """True when the message actually went out."""
        return self.status == "sent"


def send(key: str, to: str, kind: str, *, subject: str = "") -> Email:
    """Send a ``kind`` message to ``to``, once per (key, kind).

    A repeated call returns the first entry, including a ``suppressed`` one: the message
    is then not sent at all.
    """
    with db.transaction() as conn:
        existing = _load_txn(conn, key, kind)
        if existing is not None:
            return existing
        email = Email(
            key, kind, to, subject or kind.replace("_", " "), _message_id(key, kind), "sent"
        )
        _insert_txn(conn, email)
        db.record_txn(conn, service=SERVICE, action=f"send {kind}", key=key, detail=to)
    return email


def suppress(key: str, kind: str) -> bool:
    """Make sure a ``kind`` message under ``key`` is never sent from now on.

    Returns:
        True when nothing had been sent (a late ``send`` will now deliver nothing); False
        when the message already went out, so the caller must follow up (say, with a
        cancellation notice).
    """
    with db.transaction() as conn:
        existing = _load_txn(conn, key, kind)
        if existing is not None:
            return not existing.is_sent
        _insert_txn(conn, Email(key, kind, "", "", _message_id(key, kind), "suppressed"))
        db.record_txn(conn, service=SERVICE, action=f"suppress {kind}", key=key, detail="")
        return True


def get(key: str, kind: str) -> Email | None:
    """The outbox entry for (key, kind), or None."""
    with db.reading() as conn:
        return _load_txn(conn, key, kind)


def outbox(key_prefix: str | None = None) -> list[Email]:
    """Outbox entries, optionally only for keys starting with ``key_prefix``, oldest first."""
    sql = "SELECT key, kind, recipient, subject, message_id, status FROM emails"
    params: tuple[str, ...] = ()
    if key_prefix:
        sql += " WHERE key >= ? AND key < ?"
        params = db.key_range(key_prefix)
    with db.reading() as conn:
        rows = conn.execute(sql + " ORDER BY created_at, key, kind", params).fetchall()
    return [Email(*row) for row in rows]


def _message_id(key: str, kind: str) -> str:
    return db.stable_id("msg", key, kind)


def _insert_txn(conn: sqlite3.Connection, email: Email) -> None:
    conn.execute(
        "INSERT INTO emails (key, kind, recipient, subject, message_id, status, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            email.key,
            email.kind,
            email.recipient,
            email.subject,
            email.message_id,
            email.status,
            time.time(),
        ),
    )


def _load_txn(conn: sqlite3.Connection, key: str, kind: str) -> Email | None:
    row = conn.execute(
        "SELECT key, kind, recipient, subject, message_id, status FROM emails "
        "WHERE key = ? AND kind = ?",
        (key, kind),
    ).fetchone()
    return Email(*row) if row else None
