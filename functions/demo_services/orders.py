"""Demo order desk: an audit of validated order requests, and the orders themselves.

A demo stand-in for an external order-management system. Both records are keyed by the
saga step's idempotency key: a redelivered ``create`` must find the order the first
attempt made instead of opening a second one, and the compensations (``cancel``,
``withdraw_validation``), which receive the same key, must find exactly that record.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import NonRetryableStepError
from functions.demo_services import db

SERVICE = "orders"


class OrderCancelled(NonRetryableStepError):
    """Raised when ``create`` arrives after ``cancel`` for the same key (a late attempt)."""

    def __init__(self, *, key: str) -> None:
        self.key = key
        super().__init__(f"order {key!r} was already cancelled; nothing created")


@dataclass(frozen=True, slots=True)
class Validation:
    """The audit record of one validated order request.

    ``status`` is ``valid``, ``withdrawn`` (the saga undid it) or ``voided`` (withdrawn
    before it was recorded).
    """

    key: str
    customer_id: str
    total_cents: int
    status: str


@dataclass(frozen=True, slots=True)
class Order:
    """An order under one key.

    ``status`` is ``created``, ``cancelled``, or ``voided`` (cancelled before it was
    created: a marker that refuses a late ``create``).
    """

    key: str
    order_id: str
    customer_id: str
    total_cents: int
    currency: str
    lines: tuple[tuple[str, int], ...]
    payment_key: str
    reservation_key: str
    status: str

    @property
    def is_active(self) -> bool:
        """True while the order stands (created and not cancelled)."""
        return self.status == "created"


def record_validation(key: str, customer_id: str, total_cents: int) -> Validation:
    """Record that the order request under ``key`` was checked and priced, once per key.

    Returns the existing record when the key was already recorded (or withdrawn).
    """
    with db.transaction() as conn:
        existing = _load_validation_txn(conn, key)
        if existing is not None:
            return existing
        conn.execute(
            "INSERT INTO validations (key, customer_id, total_cents, status, created_at) "
            "VALUES (?, ?, ?, 'valid', ?)",
            (key, customer_id, total_cents, time.time()),
        )
        db.record_txn(
            conn, service=SERVICE, action="validate", key=key, detail=f"{total_cents} cents"
        )
    return Validation(key, customer_id, total_cents, "valid")


def withdraw_validation(key: str) -> bool:
    """Mark the validation under ``key`` withdrawn, exactly once (the saga gave up on it).

    Returns:
        True when this call withdrew a valid record; False otherwise (a void marker is
        recorded when there was nothing to withdraw).
    """
    with db.transaction() as conn:
        existing = _load_validation_txn(conn, key)
        now = time.time()
        if existing is None:
            db.record_void(
                conn,
                service=SERVICE,
                table="validations",
                row={
                    "key": key,
                    "customer_id": "",
                    "total_cents": 0,
                    "status": "voided",
                    "created_at": now,
                    "voided_at": now,
                },
                action="void-validation",
                detail="",
            )
            return False
        if existing.status != "valid":
            return False
        conn.execute(
            "UPDATE validations SET status = 'withdrawn', voided_at = ? WHERE key = ?", (now, key)
        )
        db.record_txn(conn, service=SERVICE, action="withdraw-validation", key=key, detail="")
        return True


def get_validation(key: str) -> Validation | None:
    """The validation record under ``key``, or None."""
    with db.reading() as conn:
        return _load_validation_txn(conn, key)


def create(
    key: str,
    *,
    customer_id: str,
    lines: Iterable[tuple[str, int]],
    total_cents: int,
    currency: str,
    payment_key: str,
    reservation_key: str,
) -> Order:
    """Open the order under ``key``, once; a repeated call returns the same order.

    Raises:
        OrderCancelled: the key was cancelled before it was created (nothing created).
        IdempotencyKeyReused: the key holds an order for another customer or total.
    """
    order = Order(
        key=key,
        order_id=db.stable_id("ord", key),
        customer_id=customer_id,
        total_cents=total_cents,
        currency=currency,
        lines=tuple(sorted((sku, qty) for sku, qty in lines)),
        payment_key=payment_key,
        reservation_key=reservation_key,
        status="created",
    )
    with db.transaction() as conn:
        existing = _load_order_txn(conn, key)
        if existing is not None:
            if existing.status == "voided":
                raise OrderCancelled(key=key)
            if (existing.customer_id, existing.total_cents) != (customer_id, total_cents):
                raise db.IdempotencyKeyReused(
                    service=SERVICE, key=key, detail=f"order {existing.order_id}"
                )
            return existing
        conn.execute(
            "INSERT INTO orders (key, order_id, customer_id, total_cents, currency, lines_json, "
            "payment_key, reservation_key, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'created', ?)",
            (
                key,
                order.order_id,
                customer_id,
                total_cents,
                currency,
                json.dumps(order.lines),
                payment_key,
                reservation_key,
                time.time(),
            ),
        )
        db.record_txn(conn, service=SERVICE, action="create", key=key, detail=order.order_id)
    return order


def cancel(key: str) -> bool:
    """Cancel the order under ``key``, exactly once.

    When no order exists under the key it records a void marker, so a late ``create``
    cannot open an order after the saga gave up on it.

    Returns:
        True when this call cancelled a standing order; False otherwise.
    """
    with db.transaction() as conn:
        existing = _load_order_txn(conn, key)
        now = time.time()
        if existing is None:
            db.record_void(
                conn,
                service=SERVICE,
                table="orders",
                row={
                    "key": key,
                    "order_id": db.stable_id("ord", key),
                    "customer_id": "",
                    "total_cents": 0,
                    "currency": "",
                    "lines_json": "[]",
                    "payment_key": "",
                    "reservation_key": "",
                    "status": "voided",
                    "created_at": now,
                    "cancelled_at": now,
                },
                action="void",
                detail="no order",
            )
            return False
        if existing.status != "created":
            return False
        conn.execute(
            "UPDATE orders SET status = 'cancelled', cancelled_at = ? WHERE key = ?", (now, key)
        )
        db.record_txn(conn, service=SERVICE, action="cancel", key=key, detail=existing.order_id)
        return True


def get(key: str) -> Order | None:
    """The order (or void marker) under ``key``; None when the key was never used."""
    with db.reading() as conn:
        return _load_order_txn(conn, key)


def orders(key_prefix: str | None = None) -> list[Order]:
    """Orders and void markers, optionally only for keys starting with ``key_prefix``."""
    sql = f"SELECT {_ORDER_COLUMNS} FROM orders"
    params: tuple[str, ...] = ()
    if key_prefix:
        sql += " WHERE key >= ? AND key < ?"
        params = db.key_range(key_prefix)
    with db.reading() as conn:
        rows = conn.execute(sql + " ORDER BY key", params).fetchall()
    return [_order_from_row(row) for row in rows]


_ORDER_COLUMNS = (
    "key, order_id, customer_id, total_cents, currency, lines_json, payment_key, "
    "reservation_key, status"
)


def _load_validation_txn(conn: sqlite3.Connection, key: str) -> Validation | None:
    row = conn.execute(
        "SELECT key, customer_id, total_cents, status FROM validations WHERE key = ?", (key,)
    ).fetchone()
    return Validation(*row) if row else None


def _load_order_txn(conn: sqlite3.Connection, key: str) -> Order | None:
    row = conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE key = ?",
        (key,),
    ).fetchone()
    return _order_from_row(row) if row else None


def _order_from_row(row: Sequence[Any]) -> Order:
    (
        key,
        order_id,
        customer_id,
        total,
        currency,
        lines_json,
        payment_key,
        reservation_key,
        status,
    ) = row
    lines = tuple((str(sku), int(qty)) for sku, qty in json.loads(lines_json))
    return Order(
        key=str(key),
        order_id=str(order_id),
        customer_id=str(customer_id),
        total_cents=int(total),
        currency=str(currency),
        lines=lines,
        payment_key=str(payment_key),
        reservation_key=str(reservation_key),
        status=str(status),
    )
