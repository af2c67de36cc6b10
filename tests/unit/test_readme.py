"""The README's first saga and its test run as printed: a newcomer copies them verbatim."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import RunStatus
from infra.memory.harness import memory_harness

ROOT = Path(__file__).resolve().parents[2]
MODULE = "functions.sagas.trip"


def _python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


@pytest.fixture(name="trip_module")
def fixture_trip_module() -> Iterator[types.ModuleType]:
    """The README's saga, loaded as ``functions/sagas/trip.py`` would be."""
    saga_code, _test_code = _python_blocks("Your first saga")
    module = types.ModuleType(MODULE)
    module.__file__ = str(ROOT / "functions" / "sagas" / "trip.py")
    sys.modules[MODULE] = module
    try:
        exec(compile(saga_code, module.__file__, "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[MODULE]


def test_the_readme_saga_books_a_trip(trip_module: types.ModuleType) -> None:
    """Three nights: both bookings, then one charge of their sum."""
    with memory_harness([trip_module.saga]) as harness:
        snapshot = harness.run("trip", {"traveller": "Ada", "destination": "Lisbon", "nights": 3})

    assert snapshot.run.status is RunStatus.COMPLETED
    assert snapshot.step("charge").output == {"charged_cents": 25_000 + 3 * 9_000}


def test_the_readme_test_passes_as_printed(trip_module: types.ModuleType) -> None:
    """The test block runs against the saga block and its assertions hold."""
    _saga_code, test_code = _python_blocks("Your first saga")
    namespace: dict[str, object] = {}
    exec(compile(test_code, "README.md", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    tests[0]()  # type: ignore[operator]
