"""The IOManager contract, run against every registered adapter (see conftest.py)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.errors import MissingExtraError, ResultFormatError
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
    chunk = manager.save_chunk(run_id="r-1", step="s", index=7, value=[7])
    assert chunk.endswith("/r-1/s/chunk-0000000007.json")
    leftovers = [p.name for p in expected.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert manager.describe()["path"] == str((tmp_path / "base").resolve())


def test_chunks_list_in_index_order_whatever_the_save_order(io_manager: IOManager) -> None:
    """Chunks are listed by index, ascending, apart from the results saved with save."""
    for index in [2, 0, 11, 1]:
        io_manager.save_chunk(run_id="r-1", step="stream", index=index, value={"i": index})
    io_manager.save(run_id="r-1", step="stream", result_id="summary", value="done")

    assert io_manager.list_chunks(run_id="r-1", step="stream") == [0, 1, 2, 11]
    assert io_manager.list_results(run_id="r-1", step="stream") == ["summary"]
    assert io_manager.load_chunk(run_id="r-1", step="stream", index=11) == {"i": 11}
    assert io_manager.list_chunks(run_id="r-1", step="other") == []
    assert io_manager.list_chunks(run_id="r-2", step="stream") == []


def test_saving_a_chunk_again_is_idempotent(io_manager: IOManager) -> None:
    """A redelivered attempt that saves chunk N again replaces it: still one chunk N."""
    io_manager.save_chunk(run_id="r-1", step="stream", index=0, value=[1, 2])
    io_manager.save_chunk(run_id="r-1", step="stream", index=1, value=[3])
    io_manager.save_chunk(run_id="r-1", step="stream", index=1, value=[3, 4])

    assert io_manager.list_chunks(run_id="r-1", step="stream") == [0, 1]
    assert io_manager.load_chunk(run_id="r-1", step="stream", index=1) == [3, 4]
    with pytest.raises(KeyError):
        io_manager.load_chunk(run_id="r-1", step="stream", index=2)


@pytest.mark.parametrize("bad", [-1, 10**10, True, 1.0, "1"])
def test_bad_chunk_index_is_rejected(io_manager: IOManager, bad: object) -> None:
    """A chunk index must be an int from 0 to 9,999,999,999 (it is part of the key)."""
    with pytest.raises(ValueError, match="chunk index"):
        io_manager.save_chunk(run_id="r-1", step="s", index=bad, value=0)  # type: ignore[arg-type]


def test_chunk_ids_are_reserved_for_chunks(io_manager: IOManager) -> None:
    """save refuses a result id that would pass for a chunk."""
    with pytest.raises(ValueError, match="save_chunk"):
        io_manager.save(run_id="r-1", step="s", result_id="chunk-0000000001", value=0)


def test_list_steps_and_clear_run_cover_chunks(io_manager: IOManager) -> None:
    """A run's steps are listed by name; clear_run deletes its chunks too and counts them."""
    io_manager.save(run_id="r-1", step="b", result_id="0", value=0)
    io_manager.save_chunk(run_id="r-1", step="a", index=0, value=0)
    io_manager.save_chunk(run_id="r-1", step="a", index=1, value=1)
    io_manager.save(run_id="r-2", step="c", result_id="0", value=0)

    assert io_manager.list_steps(run_id="r-1") == ["a", "b"]
    assert io_manager.clear_run(run_id="r-1") == 3
    assert io_manager.list_steps(run_id="r-1") == []
    assert io_manager.list_chunks(run_id="r-1", step="a") == []
    assert io_manager.list_steps(run_id="r-2") == ["c"]


def test_arrow_tables_are_stored_as_parquet(io_manager: IOManager) -> None:
    """A pyarrow.Table is stored as Parquet without being asked and loads back equal."""
    pyarrow = pytest.importorskip("pyarrow")
    table = pyarrow.table({"id": [1, 2, 3], "name": ["a", "b", None], "x": [0.5, 1.5, 2.5]})

    ref = io_manager.save(run_id="r-1", step="t", result_id="rows", value=table)
    io_manager.save_chunk(run_id="r-1", step="t", index=0, value=table.slice(0, 2))
    rows = [{"id": 9, "name": "z"}]
    io_manager.save(run_id="r-1", step="t", result_id="rows2", value=rows, serializer="parquet")

    assert ref.endswith("rows.parquet")
    assert io_manager.load(run_id="r-1", step="t", result_id="rows").equals(table)
    assert io_manager.load_chunk(run_id="r-1", step="t", index=0).to_pylist() == [
        {"id": 1, "name": "a", "x": 0.5},
        {"id": 2, "name": "b", "x": 1.5},
    ]
    assert io_manager.load(run_id="r-1", step="t", result_id="rows2").to_pylist() == rows
    assert io_manager.list_results(run_id="r-1", step="t") == ["rows", "rows2"]


def test_switching_from_parquet_to_json_replaces_the_value(io_manager: IOManager) -> None:
    """A result saved as Parquet and then as JSON loads as the JSON value, listed once."""
    pyarrow = pytest.importorskip("pyarrow")
    io_manager.save(run_id="r-1", step="t", result_id="x", value=pyarrow.table({"a": [1]}))
    io_manager.save(run_id="r-1", step="t", result_id="x", value={"a": [1]})

    assert io_manager.load(run_id="r-1", step="t", result_id="x") == {"a": [1]}
    assert io_manager.list_results(run_id="r-1", step="t") == ["x"]
    assert io_manager.clear_run(run_id="r-1") == 1


def test_parquet_of_a_non_table_is_a_type_error(io_manager: IOManager) -> None:
    """Parquet holds tables: a scalar asked to be stored as Parquet is refused."""
    pytest.importorskip("pyarrow")
    with pytest.raises(TypeError, match=r"pyarrow\.Table"):
        io_manager.save(run_id="r-1", step="t", result_id="x", value=3, serializer="parquet")
    assert io_manager.list_results(run_id="r-1", step="t") == []


def test_parquet_without_pyarrow_names_the_extra(
    io_manager: IOManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pyarrow, asking for Parquet raises MissingExtraError naming the arrow extra."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)

    with pytest.raises(MissingExtraError, match=r"relay\[arrow\]"):
        io_manager.save(
            run_id="r-1", step="t", result_id="x", value=[{"a": 1}], serializer="parquet"
        )
    io_manager.save(run_id="r-1", step="t", result_id="y", value=[{"a": 1}])

    assert io_manager.load(run_id="r-1", step="t", result_id="y") == [{"a": 1}]


def test_pickle_is_never_chosen_implicitly(io_manager: IOManager) -> None:
    """Without serializer='pickle', a value JSON cannot hold is refused, not pickled."""
    with pytest.raises(TypeError, match="pickle"):
        io_manager.save_chunk(run_id="r-1", step="s", index=0, value={1, 2})
    assert io_manager.list_chunks(run_id="r-1", step="s") == []


def test_pickle_not_written_by_the_codec_is_refused(tmp_path: Path) -> None:
    """A .pkl result without the codec's frame is refused before anything is unpickled."""
    import pickle

    manager = FilesystemIOManager(tmp_path / "base")
    manager.save(run_id="r-1", step="s", result_id="0", value=1, serializer="pickle")
    planted = tmp_path / "base" / "r-1" / "s" / "0.pkl"
    planted.write_bytes(pickle.dumps({"planted": True}))

    with pytest.raises(ResultFormatError, match="not written by Relay"):
        manager.load(run_id="r-1", step="s", result_id="0")


def test_marking_a_run_finished_keeps_every_result_as_it_was(io_manager: IOManager) -> None:
    """mark_run_finished changes no value, order or listing, counts results, and repeats."""
    io_manager.save(run_id="r-1", step="s", result_id="b", value={"v": 1})
    io_manager.save(run_id="r-1", step="s", result_id="a", value=[2], serializer="pickle")
    io_manager.save_chunk(run_id="r-1", step="t", index=0, value="c0")
    io_manager.save(run_id="r-2", step="s", result_id="x", value=0)

    assert io_manager.mark_run_finished(run_id="r-1", finished_at=1_800_000_000.0) == 3
    assert io_manager.mark_run_finished(run_id="r-1", finished_at=1_800_000_000.0) == 3

    assert io_manager.list_results(run_id="r-1", step="s") == ["b", "a"]
    assert io_manager.load(run_id="r-1", step="s", result_id="b") == {"v": 1}
    assert io_manager.load(run_id="r-1", step="s", result_id="a") == [2]
    assert io_manager.list_chunks(run_id="r-1", step="t") == [0]
    assert io_manager.load_chunk(run_id="r-1", step="t", index=0) == "c0"
    assert io_manager.list_steps(run_id="r-1") == ["s", "t"]
    assert io_manager.mark_run_finished(run_id="r-none", finished_at=1_800_000_000.0) == 0
    assert io_manager.clear_run(run_id="r-1") == 3
