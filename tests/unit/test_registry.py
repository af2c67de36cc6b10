"""The saga registry: references by module or by file path, imported on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigurationError, UnknownSagaError
from core.registry import SagaRegistry

TRIP = """
from core import Saga, StepContext
from trip_helpers import DESTINATION

saga = Saga("trip", description="book a trip")


@saga.step
def book_flight(ctx: StepContext) -> dict[str, str]:
    return {"to": DESTINATION}
"""


def test_a_saga_file_path_loads_with_its_neighbours_importable(tmp_path: Path) -> None:
    """``path/file.py:attr`` imports the file itself; a helper module beside it imports too."""
    (tmp_path / "trip.py").write_text(TRIP)
    (tmp_path / "trip_helpers.py").write_text('DESTINATION = "Lisbon"\n')

    saga = SagaRegistry({"trip": f"{tmp_path / 'trip.py'}:saga"}).get("trip")

    assert saga.name == "trip"
    assert list(saga.steps) == ["book_flight"]


def test_a_relative_saga_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sagas").mkdir()
    (tmp_path / "sagas" / "trip.py").write_text(TRIP)
    (tmp_path / "sagas" / "trip_helpers.py").write_text('DESTINATION = "Porto"\n')
    monkeypatch.chdir(tmp_path)

    assert SagaRegistry({"trip": "sagas/trip.py:saga"}).get("trip").name == "trip"


def test_a_missing_file_names_the_saga_and_where_it_looked(tmp_path: Path) -> None:
    registry = SagaRegistry({"trip": f"{tmp_path / 'nope.py'}:saga"})

    with pytest.raises(ConfigurationError) as raised:
        registry.get("trip")
    assert "saga 'trip' cannot be loaded" in str(raised.value)
    assert str(tmp_path / "nope.py") in str(raised.value)


def test_any_error_at_import_is_a_configuration_error_naming_the_reference(
    tmp_path: Path,
) -> None:
    """User code that raises at import (not only ImportError) names the entry and the cause."""
    (tmp_path / "broken.py").write_text("raise RuntimeError('no config for the flight API')\n")

    with pytest.raises(ConfigurationError) as raised:
        SagaRegistry({"trip": f"{tmp_path / 'broken.py'}:saga"}).get("trip")
    message = str(raised.value)
    assert "broken.py" in message and "RuntimeError: no config for the flight API" in message


def test_an_attribute_that_is_not_a_saga_is_refused(tmp_path: Path) -> None:
    (tmp_path / "trip.py").write_text("saga = 42\n")

    with pytest.raises(ConfigurationError, match=r"must name a Saga; .* defines it as int"):
        SagaRegistry({"trip": f"{tmp_path / 'trip.py'}:saga"}).get("trip")


def test_a_module_reference_without_an_attribute_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must look like"):
        SagaRegistry({"trip": "functions.sagas.order"}).get("trip")


def test_an_unknown_saga_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSagaError, match="order"):
        SagaRegistry({"order": "functions.sagas.order:saga"}).get("trip")
