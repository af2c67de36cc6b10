"""Tests for the demo business services: every operation is idempotent by key and all-or-nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.demo_services import db, emails, inventory, orders, payments, users

GOOD_TOKEN = payments.GOOD_TOKEN
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(name="demo_db")
def fixture_demo_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh demo database in a temporary RELAY_DATA_DIR, closed after the test."""
    monkeypatch.setenv("RELAY_DATA_DIR", str(tmp_path))
    db.reset()
    yield tmp_path / db.DB_FILE_NAME
    db.close_all()


def stock(sku: str) -> int:
    return inventory.products()[sku].stock


# -- db ---------------------------------------------------------------------------------


def test_database_lives_in_relay_data_dir(demo_db: Path) -> None:
    """The demo database is <RELAY_DATA_DIR>/demo.db, seeded with the catalogue at full stock."""
    assert db.database_path() == demo_db.absolute()
    assert demo_db.exists()
    catalogue = inventory.products()
    assert sorted(catalogue) == sorted(entry.sku for entry in db.CATALOGUE)
    assert all(p.stock == p.initial_stock == db.INITIAL_STOCK for p in catalogue.values())


def test_reset_restores_stock_and_clears_records(demo_db: Path) -> None:
    """reset() puts every SKU back to its seeded stock and forgets every record."""
    inventory.reserve("k1", [("SKU-MUG", 5)])
    payments.charge("k2", "c1", 100, GOOD_TOKEN)
    db.reset()
    assert stock("SKU-MUG") == db.INITIAL_STOCK
    assert inventory.get_reservation("k1") is None
    assert payments.get_charge("k2") is None
    assert db.journal() == []


def test_journal_records_changes_in_commit_order(demo_db: Path) -> None:
    """Every state change is journaled in commit order; reads and repeats add nothing."""
    inventory.reserve("run-1:reserve", [("SKU-PEN", 1)])
    payments.charge("run-1:charge", "c1", 12_000, GOOD_TOKEN)
    payments.charge("run-1:charge", "c1", 12_000, GOOD_TOKEN)
    inventory.products()
    payments.charge("run-2:charge", "c2", 100, GOOD_TOKEN)
    entries = db.journal("run-1:")
    assert [(e.service, e.action, e.key) for e in entries] == [
        ("inventory", "reserve", "run-1:reserve"),
        ("payments", "charge", "run-1:charge"),
    ]
    assert entries[0].seq < entries[1].seq
    assert len(db.journal()) == 3


# -- inventory ----------------------------------------------------------------------------


def test_reserve_twice_with_the_same_key_takes_stock_once(demo_db: Path) -> None:
    """A second reserve under the same key returns the same reservation and takes nothing more."""
    first = inventory.reserve("k", [("SKU-MUG", 2), ("SKU-BOOK", 1), ("SKU-MUG", 1)])
    second = inventory.reserve("k", [("SKU-BOOK", 1), ("SKU-MUG", 3)])
    assert first == second
    assert first.lines == (("SKU-BOOK", 1), ("SKU-MUG", 3))
    assert stock("SKU-MUG") == db.INITIAL_STOCK - 3
    assert stock("SKU-BOOK") == db.INITIAL_STOCK - 1


def test_reserve_out_of_stock_takes_nothing(demo_db: Path) -> None:
    """When one SKU is short, OutOfStock is raised and no SKU loses stock."""
    with pytest.raises(inventory.OutOfStock) as raised:
        inventory.reserve("k", [("SKU-MUG", 1), ("SKU-LAMP", db.INITIAL_STOCK + 1)])
    assert raised.value.shortages == {"SKU-LAMP": (db.INITIAL_STOCK + 1, db.INITIAL_STOCK)}
    assert stock("SKU-MUG") == db.INITIAL_STOCK
    assert stock("SKU-LAMP") == db.INITIAL_STOCK
    assert inventory.get_reservation("k") is None


def test_reserve_unknown_sku_takes_nothing(demo_db: Path) -> None:
    """An unknown SKU raises UnknownSku (a non-retryable error) and takes nothing."""
    with pytest.raises(inventory.UnknownSku):
        inventory.reserve("k", [("SKU-MUG", 1), ("SKU-NOPE", 1)])
    assert stock("SKU-MUG") == db.INITIAL_STOCK
    assert inventory.get_reservation("k") is None


def test_reserve_same_key_other_items_is_rejected(demo_db: Path) -> None:
    """Reusing a key for different items raises IdempotencyKeyReused and takes nothing more."""
    inventory.reserve("k", [("SKU-MUG", 1)])
    with pytest.raises(db.IdempotencyKeyReused):
        inventory.reserve("k", [("SKU-MUG", 2)])
    assert stock("SKU-MUG") == db.INITIAL_STOCK - 1


def test_release_restores_stock_exactly_once(demo_db: Path) -> None:
    """release() gives stock back on the first call only."""
    inventory.reserve("k", [("SKU-SHIRT", 4)])
    assert inventory.release("k") is True
    assert inventory.release("k") is False
    assert stock("SKU-SHIRT") == db.INITIAL_STOCK
    reservation = inventory.get_reservation("k")
    assert reservation is not None
    assert reservation.status == "released"


def test_release_without_reservation_is_a_noop_that_refuses_a_late_reserve(demo_db: Path) -> None:
    """Releasing an unused key changes no stock, and a reserve arriving afterwards takes nothing."""
    assert inventory.release("k") is False
    assert all(level.on_hand == level.initial for level in inventory.stock_levels().values())
    with pytest.raises(inventory.ReservationReleased):
        inventory.reserve("k", [("SKU-MUG", 1)])
    assert stock("SKU-MUG") == db.INITIAL_STOCK


def test_stock_levels_conserve_units(demo_db: Path) -> None:
    """On hand plus actively reserved always equals the seeded stock."""
    inventory.reserve("a", [("SKU-MUG", 3)])
    inventory.reserve("b", [("SKU-MUG", 2)])
    inventory.release("a")
    level = inventory.stock_levels()["SKU-MUG"]
    assert (level.on_hand, level.reserved) == (db.INITIAL_STOCK - 2, 2)
    assert [r.key for r in inventory.reservations("b")] == ["b"]


def test_concurrent_reserves_with_one_key_take_stock_once(demo_db: Path) -> None:
    """Sixteen threads reserving under one key take the stock once between them."""
    errors: list[BaseException] = []

    def reserve() -> None:
        try:
            inventory.reserve("k", [("SKU-PEN", 7)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stock("SKU-PEN") == db.INITIAL_STOCK - 7


def test_processes_sharing_the_file_neither_lose_nor_duplicate_effects(demo_db: Path) -> None:
    """Worker processes racing on the same keys reserve and charge each key exactly once."""
    script = (
        "from functions.demo_services import db, inventory, payments\n"
        "for i in range(25):\n"
        "    inventory.reserve(f'k{i}', [('SKU-MUG', 1)])\n"
        "    payments.charge(f'k{i}', 'c', 100, 'tok_visa')\n"
        "db.close_all()\n"
    )
    env = {"RELAY_DATA_DIR": str(demo_db.parent), "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO_ROOT) for _ in range(4)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0, 0, 0]
    assert stock("SKU-MUG") == db.INITIAL_STOCK - 25
    assert payments.ledger().charged_cents == 25 * 100


# -- payments -----------------------------------------------------------------------------


def test_charge_twice_with_the_same_key_charges_once(demo_db: Path) -> None:
    """A repeated charge under one key returns the first charge; the ledger shows one charge."""
    first = payments.charge("k", "cust", 2_500, GOOD_TOKEN)
    second = payments.charge("k", "cust", 2_500, GOOD_TOKEN)
    assert first == second
    assert first.payment_token == "tok_visa"
    assert payments.net_charged("k") == 2_500
    assert payments.ledger() == payments.Ledger(2_500, 0, 1, 0)


def test_declined_payment_records_nothing(demo_db: Path) -> None:
    """The declined token raises PaymentDeclined (non-retryable) and leaves no trace."""
    with pytest.raises(payments.PaymentDeclined) as raised:
        payments.charge("k", "cust", 2_500, payments.DECLINED_TOKEN)
    assert not raised.value.retryable
    assert payments.get_charge("k") is None
    assert payments.ledger() == payments.Ledger(0, 0, 0, 0)
    assert db.journal() == []


def test_charge_same_key_other_amount_is_rejected(demo_db: Path) -> None:
    """Reusing a key for a different amount raises IdempotencyKeyReused and charges nothing more."""
    payments.charge("k", "cust", 100, GOOD_TOKEN)
    with pytest.raises(db.IdempotencyKeyReused):
        payments.charge("k", "cust", 200, GOOD_TOKEN)
    assert payments.ledger().charged_cents == 100


def test_refund_happens_exactly_once(demo_db: Path) -> None:
    """refund() returns the money on the first call only; net charged ends at zero."""
    payments.charge("k", "cust", 900, GOOD_TOKEN)
    assert payments.refund("k") is True
    assert payments.refund("k") is False
    assert payments.net_charged("k") == 0
    assert payments.ledger() == payments.Ledger(900, 900, 1, 1)


def test_refund_without_charge_is_a_noop_that_refuses_a_late_charge(demo_db: Path) -> None:
    """Refunding an unused key moves no money, and a charge arriving afterwards is refused."""
    assert payments.refund("k") is False
    assert payments.ledger().net_cents == 0
    with pytest.raises(payments.ChargeVoided):
        payments.charge("k", "cust", 900, GOOD_TOKEN)
    assert payments.net_charged("k") == 0
    assert payments.ledger() == payments.Ledger(0, 0, 0, 0)


def test_charges_lists_by_key_prefix(demo_db: Path) -> None:
    """charges(prefix) returns only the keys under that prefix."""
    payments.charge("r-1:charge", "c", 1, GOOD_TOKEN)
    payments.charge("r-10:charge", "c", 1, GOOD_TOKEN)
    payments.charge("r-2:charge", "c", 1, GOOD_TOKEN)
    assert [c.key for c in payments.charges("r-1:")] == ["r-1:charge"]
    assert len(payments.charges()) == 3


# -- orders -------------------------------------------------------------------------------


def open_order(key: str) -> orders.Order:
    return orders.create(
        key,
        customer_id="c",
        lines=[("SKU-MUG", 1)],
        total_cents=899,
        currency="USD",
        payment_key="p",
        reservation_key="r",
    )


def test_create_order_twice_opens_one_order(demo_db: Path) -> None:
    """A repeated create under one key returns the same order."""
    first = open_order("k")
    assert open_order("k") == first
    assert len(orders.orders()) == 1
    assert first.is_active


def test_cancel_order_exactly_once(demo_db: Path) -> None:
    """cancel() cancels a standing order on the first call only."""
    open_order("k")
    assert orders.cancel("k") is True
    assert orders.cancel("k") is False
    order = orders.get("k")
    assert order is not None
    assert order.status == "cancelled"


def test_cancel_before_create_refuses_a_late_create(demo_db: Path) -> None:
    """Cancelling an unused key records a void marker and a later create opens nothing."""
    assert orders.cancel("k") is False
    with pytest.raises(orders.OrderCancelled):
        open_order("k")
    assert not any(o.is_active for o in orders.orders())


def test_validation_is_recorded_once_and_withdrawn_once(demo_db: Path) -> None:
    """record_validation() is idempotent and withdraw_validation() takes effect once."""
    first = orders.record_validation("k", "c", 500)
    assert orders.record_validation("k", "c", 500) == first
    assert orders.withdraw_validation("k") is True
    assert orders.withdraw_validation("k") is False
    assert orders.withdraw_validation("other") is False
    validation = orders.get_validation("k")
    assert validation is not None
    assert validation.status == "withdrawn"


# -- emails -------------------------------------------------------------------------------


def test_send_is_idempotent_per_key_and_kind(demo_db: Path) -> None:
    """One email per (key, kind): a repeat returns the first, another kind is a new email."""
    first = emails.send("k", "a@example.com", "order_confirmation")
    assert emails.send("k", "a@example.com", "order_confirmation") == first
    other = emails.send("k", "a@example.com", "order_cancellation")
    assert other.message_id != first.message_id
    assert [e.kind for e in emails.outbox("k")] == ["order_confirmation", "order_cancellation"]


def test_suppress_stops_a_late_send(demo_db: Path) -> None:
    """After suppress(), send() of that kind under that key delivers nothing."""
    assert emails.suppress("k", "welcome") is True
    late = emails.send("k", "a@example.com", "welcome")
    assert not late.is_sent
    assert emails.suppress("k", "welcome") is True


def test_suppress_after_send_reports_it_went_out(demo_db: Path) -> None:
    """suppress() returns False when the email was already sent, so the caller follows up."""
    emails.send("k", "a@example.com", "welcome")
    assert emails.suppress("k", "welcome") is False
    sent = emails.get("k", "welcome")
    assert sent is not None
    assert sent.is_sent


# -- users --------------------------------------------------------------------------------


def test_create_user_twice_opens_one_account(demo_db: Path) -> None:
    """A repeated create under one key returns the same account, email normalised."""
    first = users.create("k", "Ada@Example.com", "Ada")
    assert users.create("k", "ada@example.com", "Ada") == first
    assert first.email == "ada@example.com"


def test_email_in_use_by_an_active_account_is_rejected(demo_db: Path) -> None:
    """A second key cannot take an active account's email, but can once it is deactivated."""
    users.create("k1", "ada@example.com", "Ada")
    with pytest.raises(users.EmailTaken):
        users.create("k2", "ada@example.com", "Ada")
    assert users.deactivate("k1") is True
    assert users.deactivate("k1") is False
    assert users.create("k2", "ada@example.com", "Ada").is_active


def test_deactivate_before_create_refuses_a_late_create(demo_db: Path) -> None:
    """Deactivating an unused key records a void marker and a later create opens nothing."""
    assert users.deactivate("k") is False
    with pytest.raises(users.UserDeactivated):
        users.create("k", "ada@example.com", "Ada")
