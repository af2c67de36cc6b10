"""Demo user directory: accounts created and deactivated under the caller's idempotency key.

A demo stand-in for an external identity service. Accounts are keyed by the saga step's
idempotency key so that a redelivered ``create_user`` returns the account the first
attempt made (and does not trip over its own email address), and ``deactivate`` (the
compensation, which receives the same key) closes exactly that account.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from core.errors import NonRetryableStepError
from functions.demo_services import db

SERVICE = "users"


class EmailTaken(NonRetryableStepError):
    """Raised when another active account already uses the email address."""

    def __init__(self, *, email: str) -> None:
        self.email = email
        super().__init__(f"an active account already uses {email}")


class UserDeactivated(NonRetryableStepError):
    """Raised when ``create`` arrives after ``deactivate`` for the same key (a late attempt)."""

    def __init__(self, *, key: str) -> None:
        self.key = key
        super().__init__(f"account {key!r} was already closed; nothing created")


@dataclass(frozen=True, slots=True)
class User:
    """An account under one key.

    ``status`` is ``active``, ``deactivated``, or ``voided`` (deactivated before it was
    created: a marker that refuses a late ``create``).
    """

    key: str
    user_id: str
    email: str
    name: str
    status: str

    @property
    def is_active(self) -> bool:
        """True while the account is open."""
        return self.status == "active"


def create(key: str, email: str, name: str) -> User:
    """Open an account under ``key``, once; a repeated call returns the same account.

    Raises:
        EmailTaken: another key's active account has this email (nothing created).
        UserDeactivated: the key was deactivated before it was created.
        IdempotencyKeyReused: the key holds an account for another email.
    """
    normalized = email.strip().lower()
    with db.transaction() as conn:
        existing = _load_txn(conn, key)
        if existing is not None:
            if existing.status == "voided":
                raise UserDeactivated(key=key)
            if existing.email != normalized:
                raise db.IdempotencyKeyReused(
                    service=SERVICE, key=key, detail=f"the account of {existing.email}"
                )
            return existing
        taken = conn.execute(
            "SELECT 1 FROM users WHERE email = ? AND status = 'active'", (normalized,)
        ).fetchone()
        if taken:
            raise EmailTaken(email=normalized)
        user = User(key, db.stable_id("usr", key), normalized, name, "active")
        conn.execute(
            "INSERT INTO users (key, user_id, email, name, status, created_at) "
            "VALUES (?, ?, ?, ?, 'active', ?)",
            (key, user.user_id, normalized, name, time.time()),
        )
        db.record_txn(conn, service=SERVICE, action="create", key=key, detail=user.user_id)
    return user


def deactivate(key: str) -> bool:
    """Close the account under ``key``, exactly once.

    When no account exists under the key it records a void marker, so a late ``create``
    cannot open one afterwards.

    Returns:
        True when this call closed an active account; False otherwise.
    """
    with db.transaction() as conn:
        existing = _load_txn(conn, key)
        now = time.time()
        if existing is None:
            db.record_void(
                conn,
                service=SERVICE,
                table="users",
                row={
                    "key": key,
                    "user_id": db.stable_id("usr", key),
                    "email": "",
                    "name": "",
                    "status": "voided",
                    "created_at": now,
                    "deactivated_at": now,
                },
                action="void",
                detail="no account",
            )
            return False
        if existing.status != "active":
            return False
        conn.execute(
            "UPDATE users SET status = 'deactivated', deactivated_at = ? WHERE key = ?", (now, key)
        )
        db.record_txn(conn, service=SERVICE, action="deactivate", key=key, detail=existing.user_id)
        return True


def get(key: str) -> User | None:
    """The account (or void marker) under ``key``; None when the key was never used."""
    with db.reading() as conn:
        return _load_txn(conn, key)


def _load_txn(conn: sqlite3.Connection, key: str) -> User | None:
    row = conn.execute(
        "SELECT key, user_id, email, name, status FROM users WHERE key = ?", (key,)
    ).fetchone()
    return User(*row) if row else None
