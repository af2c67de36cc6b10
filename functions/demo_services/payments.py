"""Demo payment provider: charges and refunds keyed by the caller's idempotency key.

A demo stand-in for an external payment API (Stripe and Adyen take an ``Idempotency-Key``
header for the same reason). Steps are delivered at least once and a timed-out attempt may
still complete later, so ``charge`` with a key that already charged returns that charge,
and ``refund`` (the compensation, which receives the same key) refunds exactly that charge,
once. Callers pass a payment token (as from a provider's client-side tokenisation), never
a card number, so run inputs that Relay stores and shows hold nothing secret.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass

from core.errors import NonRetryableStepError
from functions.demo_services import db

SERVICE = "payments"
GOOD_TOKEN = "tok_visa"
"""A payment token the demo provider accepts."""
DECLINED_TOKEN = "tok_chargeDeclined"
"""The payment token the demo provider always declines (named after Stripe's test token)."""
TOKEN_PATTERN = r"^tok_[A-Za-z0-9]{2,40}$"
"""What a payment token looks like."""


class PaymentDeclined(NonRetryableStepError):
    """Raised when the provider declines the payment method; nothing is charged or recorded.

    The message names the payment (its key), never the payment token: a run's error is
    read by people who must not learn the token (issue 10, finding 6). Every reader of the
    run may see ``public_message``; the full message goes to ``error_detail``.
    """

    public_message = "the payment method was declined"

    def __init__(self, *, key: str) -> None:
        self.key = key
        super().__init__(f"the payment method was declined for payment {key!r}")


class ChargeVoided(NonRetryableStepError):
    """Raised when ``charge`` arrives after ``refund`` voided its key.

    This is a late attempt of a step its saga already compensated; charging now would
    leave money taken for an order that no longer exists, so nothing is charged.
    """

    def __init__(self, *, key: str) -> None:
        self.key = key
        super().__init__(f"payment {key!r} was voided by an earlier refund; nothing charged")


@dataclass(frozen=True, slots=True)
class Charge:
    """A payment under one key.

    ``status`` is ``charged``, ``refunded`` (charged, then refunded in full) or ``voided``
    (refunded before any charge existed: a marker that refuses a late charge, amount 0).
    """

    key: str
    charge_id: str
    customer_id: str
    amount_cents: int
    payment_token: str
    status: str

    @property
    def net_cents(self) -> int:
        """What the customer is out of pocket for this charge."""
        return self.amount_cents if self.status == "charged" else 0


@dataclass(frozen=True, slots=True)
class Ledger:
    """Money totals over many charges, read in one snapshot."""

    charged_cents: int
    refunded_cents: int
    charge_count: int
    refund_count: int

    @property
    def net_cents(self) -> int:
        """Charged minus refunded."""
        return self.charged_cents - self.refunded_cents


def charge(key: str, customer_id: str, amount_cents: int, payment_token: str) -> Charge:
    """Charge ``amount_cents`` to the tokenised payment method, once per key.

    Idempotent: a second call with the same key and arguments returns the first charge.

    Raises:
        PaymentDeclined: the token is the demo's declined token (nothing recorded).
        ChargeVoided: the key was refunded before it was charged (nothing charged).
        IdempotencyKeyReused: the key already charged a different amount or customer.
        ValueError: the amount is not positive or the token is malformed.
    """
    if amount_cents <= 0:
        raise ValueError(f"amount must be positive, got {amount_cents} cents")
    if not re.match(TOKEN_PATTERN, payment_token):
        raise ValueError("payment token must look like tok_<letters or digits>")
    with db.transaction() as conn:
        existing = _load_txn(conn, key)
        if existing is not None:
            if existing.status == "voided":
                raise ChargeVoided(key=key)
            if (existing.amount_cents, existing.customer_id) != (amount_cents, customer_id):
                raise db.IdempotencyKeyReused(
                    service=SERVICE,
                    key=key,
                    detail=f"a charge of {existing.amount_cents} cents to {existing.customer_id!r}",
                )
            return existing
        if payment_token == DECLINED_TOKEN:
            raise PaymentDeclined(key=key)
        created = Charge(
            key, db.stable_id("ch", key), customer_id, amount_cents, payment_token, "charged"
        )
        conn.execute(
            "INSERT INTO charges (key, charge_id, customer_id, amount_cents, payment_token, "
            "status, created_at) VALUES (?, ?, ?, ?, ?, 'charged', ?)",
            (key, created.charge_id, customer_id, amount_cents, payment_token, time.time()),
        )
        db.record_txn(
            conn, service=SERVICE, action="charge", key=key, detail=f"{amount_cents} cents"
        )
    return created


def refund(key: str) -> bool:
    """Refund the charge made under ``key`` in full, exactly once.

    When nothing was charged under the key it records a void marker (amount 0) so that a
    late ``charge`` cannot take money after the saga gave up on it.

    Returns:
        True when this call refunded money; False when already refunded or never charged.
    """
    with db.transaction() as conn:
        existing = _load_txn(conn, key)
        now = time.time()
        if existing is None:
            db.record_void(
                conn,
                service=SERVICE,
                table="charges",
                row={
                    "key": key,
                    "charge_id": db.stable_id("ch", key),
                    "customer_id": "",
                    "amount_cents": 0,
                    "payment_token": "",
                    "status": "voided",
                    "created_at": now,
                    "refunded_at": now,
                },
                action="void",
                detail="nothing charged",
            )
            return False
        if existing.status != "charged":
            return False
        conn.execute(
            "UPDATE charges SET status = 'refunded', refunded_at = ? WHERE key = ?", (now, key)
        )
        db.record_txn(
            conn,
            service=SERVICE,
            action="refund",
            key=key,
            detail=f"{existing.amount_cents} cents",
        )
        return True


def get_charge(key: str) -> Charge | None:
    """The charge (or void marker) under ``key``; None when the key was never used."""
    with db.reading() as conn:
        return _load_txn(conn, key)


def net_charged(key: str) -> int:
    """Cents the customer is out of pocket under ``key``: 0 when refunded, voided or absent."""
    found = get_charge(key)
    return found.net_cents if found else 0


def charges(key_prefix: str | None = None) -> list[Charge]:
    """Charges and void markers, optionally only for keys starting with ``key_prefix``."""
    sql = "SELECT key, charge_id, customer_id, amount_cents, payment_token, status FROM charges"
    params: tuple[str, ...] = ()
    if key_prefix:
        sql += " WHERE key >= ? AND key < ?"
        params = db.key_range(key_prefix)
    with db.reading() as conn:
        rows = conn.execute(sql + " ORDER BY key", params).fetchall()
    return [Charge(*row) for row in rows]


def ledger() -> Ledger:
    """Totals over every charge the provider holds (void markers count as nothing)."""
    with db.reading() as conn:
        charged, refunded, charge_count, refund_count = conn.execute(
            "SELECT COALESCE(SUM(amount_cents), 0), "
            "COALESCE(SUM(CASE WHEN status = 'refunded' THEN amount_cents ELSE 0 END), 0), "
            "COALESCE(SUM(status != 'voided'), 0), COALESCE(SUM(status = 'refunded'), 0) "
            "FROM charges"
        ).fetchone()
    return Ledger(int(charged), int(refunded), int(charge_count), int(refund_count))


def _load_txn(conn: sqlite3.Connection, key: str) -> Charge | None:
    row = conn.execute(
        "SELECT key, charge_id, customer_id, amount_cents, payment_token, status FROM charges "
        "WHERE key = ?",
        (key,),
    ).fetchone()
    return Charge(*row) if row else None
