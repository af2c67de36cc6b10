"""The fuzz suite's stack (one ``relay dev`` for the session) and its summary line.

The summary (requests sent, responses >= 500, schema violations, stray writes, forged or
replayed deliveries accepted) is printed at the end of every pytest run that ran a fuzz
test, ``make test`` included, and written with its notes to ``fuzz-report.json`` in the
stack's temporary directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.stack import TALLY, FuzzStack, start_stack

_REPORT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    """``relay dev --in-process`` serving the fuzz sagas, for the whole session."""
    stack = start_stack(tmp_path_factory.mktemp("fuzz"))
    try:
        yield stack
    finally:
        stack.server.stop()


@pytest.fixture(scope="session", autouse=True)
def _fuzz_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Write the figures, notes and answers per operation when the session ends."""
    path = tmp_path_factory.getbasetemp() / "fuzz-report.json"
    yield
    if TALLY.requests:
        path.write_text(json.dumps(TALLY.to_json(), indent=2))
        _REPORT["path"] = path


@pytest.fixture
def quiet(fuzz_stack: FuzzStack) -> FuzzStack:
    """The stack once no run is in flight, so a snapshot is stable."""
    fuzz_stack.db.wait_quiet()
    return fuzz_stack


@pytest.fixture(autouse=True)
def _tally_known_failures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Findings of tests marked xfail (fixed on other branches) are shown apart."""
    TALLY.is_in_known_failure = request.node.get_closest_marker("xfail") is not None
    yield
    TALLY.is_in_known_failure = False


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fuzz figures (only when the suite ran)."""
    if not TALLY.requests:
        return
    terminalreporter.section("fuzz")
    terminalreporter.write_line(TALLY.summary())
    for note in TALLY.notes[:12]:
        terminalreporter.write_line(f"  {note}")
    if "path" in _REPORT:
        terminalreporter.write_line(f"report: {_REPORT['path']}")
