"""The IOManager contract, run against every registered adapter (see conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.ports.io_manager import IOManager
from infra.local.fs_io_manager import FilesystemIOManager


def test_save_then_load_round_trips_json(io_manager: IOManager) -> None:
    """A JSON value saved under a key loads back equal."""
    value = {"rows": [1, 2.5, None, True], "name": "ünïcødé ✓", "nested": {"x": []}}

    ref = io_manager.save(run_id="r-1", step="extract", result_id="0", value=value)

    assert isinstance(ref, str)
    assert ref
    assert io_manager.load(run_id="r-1", step="extract", result_id="0") == value


def test_save_again_overwrites(io_manager: IOManager) -> None:
    """Saving the same key twice keeps the second value (idempotent retries)."""
    io_manager.save(run_id="r-1", step="s", result_id="out", value=[1])
    io_manager.save(run_id="r-1", step="s", result_id="out", value=[2])

    assert io_manager.load(run_id="r-1", step="s", result_id="out") == [2]
    assert io_manager.list_results(run_id="r-1", step="s") == ["out"]


def test_loaded_value_is_a_copy(io_manager: IOManager) -> None:
    """Mutating a saved or loaded object does not change what is stored."""
    value = {"n": 1}
    io_manager.save(run_id="r-1", step="s", result_id="out", value=value)
    value["n"] = 2
    io_manager.load(run_id="r-1", step="s", result_id="out")["n"] = 3

    assert io_manager.load(run_id="r-1", step="s", result_id="out") == {"n": 1}


def test_non_json_value_needs_pickle(io_manager: IOManager) -> None:
    """A value JSON cannot hold is refused by default and stored when pickle is asked for."""
    value = {"when": datetime(2024, 1, 2, tzinfo=UTC), "ids": {1, 2}}

    with pytest.raises(TypeError, match="pickle"):
        io_manager.save(run_id="r-1", step="s", result_id="dt", value=value)
    io_manager.save(run_id="r-1", step="s", result_id="dt", value=value, serializer="pickle")

    assert io_manager.load(run_id="r-1", step="s", result_id="dt") == value


def test_switching_serializer_replaces_the_value(io_manager: IOManager) -> None:
    """A result saved as pickle and then as JSON loads as the JSON value, listed once."""
    io_manager.save(run_id="r-1", step="s", result_id="x", value={1, 2}, serializer="pickle")
    io_manager.save(run_id="r-1", step="s", result_id="x", value=[1, 2])

    assert io_manager.load(run_id="r-1", step="s", result_id="x") == [1, 2]
    assert io_manager.list_results(run_id="r-1", step="s") == ["x"]


def test_list_results_in_save_order(io_manager: IOManager) -> None:
    """Result ids are listed in the order they were first saved, per step."""
    for result_id in ["c", "a", "10", "b", "2"]:
        io_manager.save(run_id="r-1", step="s", result_id=result_id, value=result_id)
    io_manager.save(run_id="r-1", step="other", result_id="z", value=0)

    assert io_manager.list_results(run_id="r-1", step="s") == ["c", "a", "10", "b", "2"]
    assert io_manager.list_results(run_id="r-1", step="missing") == []
    assert io_manager.list_results(run_id="r-none", step="s") == []


def test_clear_run_deletes_its_results_only(io_manager: IOManager) -> None:
    """clear_run removes every result of one run, returns the count, and spares other runs."""
    io_manager.save(run_id="r-1", step="a", result_id="0", value=0)
    io_manager.save(run_id="r-1", step="a", result_id="1", value=1)
    io_manager.save(run_id="r-1", step="b", result_id="0", value=2, serializer="pickle")
    io_manager.save(run_id="r-2", step="a", result_id="0", value=3)

    deleted = io_manager.clear_run(run_id="r-1")

    assert deleted == 3
    assert io_manager.list_results(run_id="r-1", step="a") == []
    with pytest.raises(KeyError):
        io_manager.load(run_id="r-1", step="a", result_id="0")
    assert io_manager.load(run_id="r-2", step="a", result_id="0") == 3
    assert io_manager.clear_run(run_id="r-1") == 0


def test_load_of_missing_result_raises_key_error(io_manager: IOManager) -> None:
    """Loading a key never saved raises KeyError."""
    io_manager.save(run_id="r-1", step="s", result_id="0", value=0)

    with pytest.raises(KeyError):
        io_manager.load(run_id="r-1", step="s", result_id="1")
    with pytest.raises(KeyError):
        io_manager.load(run_id="r-9", step="s", result_id="0")


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "../x", "a/b", "a\\b", "/etc", "x\x00y", "a\nb", "a\rb"]
)
def test_unsafe_path_components_are_rejected(io_manager: IOManager, bad: str) -> None:
    """Ids that could escape the run's namespace are refused with ValueError."""
    with pytest.raises(ValueError, match="storage key"):
        io_manager.save(run_id=bad, step="s", result_id="0", value=0)
    with pytest.raises(ValueError, match="storage key"):
        io_manager.save(run_id="r-1", step=bad, result_id="0", value=0)
    with pytest.raises(ValueError, match="storage key"):
        io_manager.save(run_id="r-1", step="s", result_id=bad, value=0)
    with pytest.raises(ValueError, match="storage key"):
        io_manager.load(run_id="r-1", step="s", result_id=bad)
    with pytest.raises(ValueError, match="storage key"):
        io_manager.clear_run(run_id=bad)


def test_filesystem_layout_and_file_uri(tmp_path: Path) -> None:
    """The filesystem manager writes <base>/<run>/<step>/<id>.json and returns a file:// URI."""
    manager = FilesystemIOManager(tmp_path / "base")

    ref = manager.save(run_id="r-1", step="s", result_id="0", value={"a": 1})
    pickled = manager.save(run_id="r-1", step="s", result_id="1", value=1, serializer="pickle")

    expected = (tmp_path / "base" / "r-1" / "s" / "0.json").resolve()
    assert ref == expected.as_uri()
    assert expected.read_text() == '{"a":1}'
    assert pickled.endswith("/r-1/s/1.pkl")
    leftovers = [p.name for p in expected.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert manager.describe()["path"] == str((tmp_path / "base").resolve())
