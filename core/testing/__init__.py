"""Testing helpers for sagas: ``SagaHarness`` drives the real engine with a clock you move.

See ``core/testing/harness.py`` for the API and an example; ``infra.memory.harness``
builds a harness on the in-memory adapters (``core`` imports no adapter itself).
"""

from __future__ import annotations

from core.testing.harness import DEFAULT_SETTINGS, SagaHarness, SimulatedCrash

__all__ = ["DEFAULT_SETTINGS", "SagaHarness", "SimulatedCrash"]
