"""Fixtures every test directory may use, from the support package (``tests/support``).

Registered as plugins so that test modules use fixtures by name instead of importing
them from one another.
"""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.support.aws",
    "tests.support.aws_stack",
    "tests.support.gcp",
    "tests.support.gcp_stack",
    "tests.support.monitoring",
    "tests.support.backends.push",
]

EMULATOR_FIXTURES = frozenset(
    {"moto_endpoint", "firestore_emulator", "pubsub_emulator", "storage_emulator", "tasks_emulator"}
)
"""The session fixtures that start an emulator process (tests/support/aws.py, gcp.py)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``emulator`` every test that would start an emulator, so ``-m "not emulator"``
    (``make test-fast``) runs none.

    Found from the fixtures the test needs, those that a parametrised fixture requests by
    name (``store_and_queue[firestore]`` asks for ``firestore_store``) included.
    """
    for item in items:
        if _needs_emulator(item):
            item.add_marker(pytest.mark.emulator)


def _needs_emulator(item: pytest.Item) -> bool:
    manager = item.session._fixturemanager
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec else ()
    pending = [*getattr(item, "fixturenames", ()), *(p for p in params if isinstance(p, str))]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in EMULATOR_FIXTURES:
            return True
        if name in seen:
            continue
        seen.add(name)
        for definition in manager.getfixturedefs(name, item) or ():
            pending.extend(definition.argnames)
    return False
