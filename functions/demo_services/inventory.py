"""Demo inventory service: a product catalogue with stock, and reservations keyed by the caller.

A demo stand-in for an external warehouse API. Reservations are keyed by the saga step's
idempotency key because steps are delivered at least once: a retried ``reserve`` must find
the reservation the first attempt made instead of taking stock twice, and ``release`` (the
compensation, which receives the same key) must find exactly that reservation to undo.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.errors import NonRetryableStepError
from functions.demo_services import db

SERVICE = "inventory"


class UnknownSku(NonRetryableStepError):
    """Raised when an item names a SKU the catalogue does not sell."""

    def __init__(self, *, skus: Iterable[str]) -> None:
        self.skus = sorted(skus)
        known = ", ".join(p.sku for p in db.CATALOGUE)
        super().__init__(f"unknown SKU(s) {', '.join(self.skus)}; the catalogue sells {known}")


class OutOfStock(NonRetryableStepError):
    """Raised when stock is short for at least one item; the reservation takes nothing."""

    def __init__(self, *, key: str, shortages: Mapping[str, tuple[int, int]]) -> None:
        self.key = key
        self.shortages = dict(shortages)
        detail = ", ".join(
            f"{sku} (wanted {wanted}, {available} available)"
            for sku, (wanted, available) in sorted(self.shortages.items())
        )
        super().__init__(f"reservation {key!r} cannot be filled: {detail}")


class ReservationReleased(NonRetryableStepError):
    """Raised when ``reserve`` arrives after ``release`` for the same key.

    This is a late attempt of a step whose saga already compensated it (an attempt that
    overran its timeout, say); taking stock now would leak it, so nothing is taken.
    """

    def __init__(self, *, key: str) -> None:
        self.key = key
        super().__init__(f"reservation {key!r} was already released; nothing reserved")


@dataclass(frozen=True, slots=True)
class Product:
    """A catalogue entry with its current stock."""

    sku: str
    name: str
    price_cents: int
    stock: int
    initial_stock: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """Stock held under one key.

    ``status`` is ``reserved`` (stock held), ``released`` (held, then given back) or
    ``voided`` (released before anything was reserved; a later ``reserve`` is refused).
    """

    key: str
    status: str
    lines: tuple[tuple[str, int], ...]

    @property
    def is_active(self) -> bool:
        """True while the reservation holds stock."""
        return self.status == "reserved"


@dataclass(frozen=True, slots=True)
class StockLevel:
    """Where the units of one SKU are: on hand, held by active reservations, seeded."""

    sku: str
    on_hand: int
    reserved: int
    initial: int


def normalize_lines(items: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Merge repeated SKUs and sort, so the same order always has the same lines.

    Raises:
        ValueError: a quantity is not a positive integer.
    """
    merged: dict[str, int] = {}
    for sku, quantity in items:
        if quantity < 1:
            raise ValueError(f"quantity of {sku!r} must be at least 1, got {quantity}")
        merged[sku] = merged.get(sku, 0) + quantity
    if not merged:
        raise ValueError("a reservation needs at least one item")
    return tuple(sorted(merged.items()))


def products(skus: Iterable[str] | None = None) -> dict[str, Product]:
    """Catalogue entries by SKU (all of them, or those of ``skus`` that exist)."""
    with db.reading() as conn:
        rows = conn.execute(
            "SELECT sku, name, price_cents, stock, initial_stock FROM products ORDER BY sku"
        ).fetchall()
    wanted = None if skus is None else set(skus)
    return {row[0]: Product(*row) for row in rows if wanted is None or row[0] in wanted}


def reserve(key: str, items: Iterable[tuple[str, int]]) -> Reservation:
    """Hold stock for ``items`` (``(sku, quantity)`` pairs) under ``key``, all or nothing.

    Idempotent: a second call with the same key and items returns the same reservation
    without taking stock again.

    Raises:
        UnknownSku: an item names a SKU the catalogue lacks (nothing taken).
        OutOfStock: some SKU has too few units (nothing taken).
        ReservationReleased: the key was released already (nothing taken).
        IdempotencyKeyReused: the key holds a reservation for different items.
    """
    lines = normalize_lines(items)
    with db.transaction() as conn:
        existing = _load_txn(conn, key)
        if existing is not None:
            if existing.status != "reserved":
                raise ReservationReleased(key=key)
            if existing.lines != lines:
                raise db.IdempotencyKeyReused(
                    service=SERVICE, key=key, detail=f"a reservation of {list(existing.lines)}"
                )
            return existing
        stock = _stock_txn(conn, [sku for sku, _ in lines])
        unknown = [sku for sku, _ in lines if sku not in stock]
        if unknown:
            raise UnknownSku(skus=unknown)
        short = {sku: (qty, stock[sku]) for sku, qty in lines if stock[sku] < qty}
        if short:
            raise OutOfStock(key=key, shortages=short)
        conn.execute(
            "INSERT INTO reservations (key, status, created_at) VALUES (?, 'reserved', ?)",
            (key, time.time()),
        )
        for sku, qty in lines:
            conn.execute("UPDATE products SET stock = stock - ? WHERE sku = ?", (qty, sku))
            conn.execute(
                "INSERT INTO reservation_lines (key, sku, quantity) VALUES (?, ?, ?)",
                (key, sku, qty),
            )
        db.record_txn(conn, service=SERVICE, action="reserve", key=key, detail=_describe(lines))
    return Reservation(key, "reserved", lines)


def release(key: str) -> bool:
    """Give back the stock held under ``key``, exactly once.

    When nothing was reserved under the key it records that the key is void, so a late
    ``reserve`` (an attempt that overran its timeout) cannot take stock afterwards.

    Returns:
        True when this call returned stock; False when it was already released or
        nothing was reserved.
    """
    with db.transaction() as conn:
        existing = _load_txn(conn, key)
        now = time.time()
        if existing is None:
            db.record_void(
                conn,
                service=SERVICE,
                table="reservations",
                row={"key": key, "status": "voided", "created_at": now, "released_at": now},
                action="void",
                detail="nothing reserved",
            )
            return False
        if existing.status != "reserved":
            return False
        for sku, qty in existing.lines:
            conn.execute("UPDATE products SET stock = stock + ? WHERE sku = ?", (qty, sku))
        conn.execute(
            "UPDATE reservations SET status = 'released', released_at = ? WHERE key = ?",
            (now, key),
        )
        db.record_txn(
            conn, service=SERVICE, action="release", key=key, detail=_describe(existing.lines)
        )
        return True


def get_reservation(key: str) -> Reservation | None:
    """The reservation under ``key``, or None when the key was never used."""
    with db.reading() as conn:
        return _load_txn(conn, key)


def reservations(key_prefix: str) -> list[Reservation]:
    """Every reservation whose key starts with ``key_prefix`` (e.g. ``"<run_id>:"``)."""
    with db.reading() as conn:
        keys = [
            row[0]
            for row in conn.execute(
                "SELECT key FROM reservations WHERE key >= ? AND key < ? ORDER BY key",
                db.key_range(key_prefix),
            )
        ]
        found = [_load_txn(conn, key) for key in keys]
    return [r for r in found if r is not None]


def stock_levels() -> dict[str, StockLevel]:
    """For every SKU: units on hand, units held by active reservations, units seeded.

    Read in one snapshot, so ``on_hand + reserved == initial`` holds exactly when no stock
    was lost or created.
    """
    with db.reading() as conn:
        held = dict(
            conn.execute(
                "SELECT l.sku, SUM(l.quantity) FROM reservation_lines l "
                "JOIN reservations r ON r.key = l.key WHERE r.status = 'reserved' GROUP BY l.sku"
            ).fetchall()
        )
        rows = conn.execute("SELECT sku, stock, initial_stock FROM products").fetchall()
    return {
        sku: StockLevel(sku, stock, int(held.get(sku, 0)), initial) for sku, stock, initial in rows
    }


def _load_txn(conn: sqlite3.Connection, key: str) -> Reservation | None:
    row = conn.execute("SELECT status FROM reservations WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    lines = conn.execute(
        "SELECT sku, quantity FROM reservation_lines WHERE key = ? ORDER BY sku", (key,)
    ).fetchall()
    return Reservation(key, row[0], tuple((sku, qty) for sku, qty in lines))


def _stock_txn(conn: sqlite3.Connection, skus: list[str]) -> dict[str, int]:
    marks = ", ".join("?" for _ in skus)
    rows = conn.execute(
        f"SELECT sku, stock FROM products WHERE sku IN ({marks})",
        skus,
    ).fetchall()
    return dict(rows)


def _describe(lines: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{qty} x {sku}" for sku, qty in lines)
