"""The engine suite runs its ``protocol`` tests once per registered state store.

``saga_harness`` (``tests/support/backends/fixtures.py``) builds a ``core.testing``
harness on each store the contract suites use: memory, SQLite, Firestore (emulator) and
DynamoDB (moto server). ``pytest -m protocol`` runs the suite; ``-k sqlite`` one backend.
"""

from tests.support.backends.fixtures import *  # noqa: F403
