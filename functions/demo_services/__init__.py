"""Demo business services (inventory, payments, orders, emails, users) for the bundle's sagas.

They stand in for the external systems a real saga would call, so they keep their data in
their own SQLite file (``<RELAY_DATA_DIR>/demo.db``), apart from Relay's run state, and
every operation is idempotent by the caller's idempotency key, as real payment and
inventory APIs are.
"""
