"""Registries of the backends the per-adapter suites run on, one list per port.

A backend module (``fixtures.py`` for the local adapters, ``aws.py`` and ``gcp.py`` for
the cloud ones) decorates its fixtures with the registrar of their port; ``fixtures.py``
imports those modules so their fixtures exist and are listed before the parametrised
fixtures are built. A state store registered once runs both the state-store contract
suite (``tests/contract``) and the engine's protocol suite (``tests/engine``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from core.ports.state_store import StateStore
from core.ports.task_queue import PullQueue

F = TypeVar("F", bound=Callable[..., Any])

STATE_STORE_BACKENDS: list[str] = []
PULL_QUEUE_BACKENDS: list[str] = []
IO_MANAGER_BACKENDS: list[str] = []
API_KEY_STORE_BACKENDS: list[str] = []
"""API key stores (``core/ports/api_keys.py``): fixtures return an ``ApiKeyStore``."""
PUSH_QUEUE_BACKENDS: list[str] = []
"""Push queues (Cloud Tasks): fixtures return a ``push.PushQueueUnderTest``."""
REAL_TIME_PULL_QUEUES: set[str] = set()
"""Pull queues that keep their own (wall-clock) time, such as a cloud queue on an emulator:
the queue suite waits for real with them instead of moving the shared fixed clock."""


def _registrar(registry: list[str]) -> Callable[[F], F]:
    def register(fixture_function: F) -> F:
        registry.append(fixture_function.__name__)
        return pytest.fixture(fixture_function)  # type: ignore[no-any-return]

    return register


state_store_backend = _registrar(STATE_STORE_BACKENDS)
pull_queue_backend = _registrar(PULL_QUEUE_BACKENDS)
io_manager_backend = _registrar(IO_MANAGER_BACKENDS)
push_queue_backend = _registrar(PUSH_QUEUE_BACKENDS)
api_key_store_backend = _registrar(API_KEY_STORE_BACKENDS)


def real_time_pull_queue_backend(fixture_function: F) -> F:
    """Register a pull queue whose delays and leases run on the wall clock."""
    REAL_TIME_PULL_QUEUES.add(fixture_function.__name__)
    return pull_queue_backend(fixture_function)


@dataclass(frozen=True)
class StoreAndQueue:
    """A state store and, when it delivers its own outbox, the queue it delivers to."""

    store: StateStore
    outbox_queue: PullQueue | None
