"""What every I/O manager adapter shares: safe key components, chunk ids and the codecs.

The rules live next to the port so the filesystem, memory, S3 and GCS adapters cannot
drift apart: a run id that one backend refuses must be refused by all of them, and a
value stored by one reads back the same way from any other.

Codecs, chosen by the file or object name's suffix:

* ``.json``: the default, for any JSON value.
* ``.parquet``: a ``pyarrow.Table`` (or ``RecordBatch``, or a list of row dicts when the
  caller asks for ``"parquet"``), loaded back as a ``pyarrow.Table``. Needs the ``arrow``
  extra; pyarrow is imported only when a Parquet result is saved or loaded.
* ``.pkl``: only when the caller asks for ``"pickle"``. The bytes start with a frame
  header, and a ``.pkl`` result without it is refused before anything is unpickled, so
  a pickle that Relay's codec did not write is never loaded.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any, Final

from core.errors import MissingExtraError, ResultFormatError
from core.ports.io_manager import Serializer

SUFFIXES: Final[Mapping[Serializer, str]] = {
    "json": ".json",
    "parquet": ".parquet",
    "pickle": ".pkl",
}
"""File or object name suffix per format; the suffix is how ``load`` knows the format."""

RESULT_SUFFIXES: Final = tuple(SUFFIXES.values())

CONTENT_TYPES: Final[Mapping[Serializer, str]] = {
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
    "pickle": "application/x-python-pickle",
}

_FORBIDDEN: Final = ("/", "\\", "\x00", "\r", "\n")
"""Path separators and NUL, plus CR and LF, which Cloud Storage refuses in object names."""

_PICKLE_FRAME: Final = b"relay-pickle:1\n"
"""The first bytes of every pickle this codec writes; ``decode_value`` requires them."""

_CHUNK_PREFIX: Final = "chunk-"
_CHUNK_DIGITS: Final = 10
_CHUNK_ID: Final = re.compile(rf"chunk-(\d{{{_CHUNK_DIGITS}}})")
MAX_CHUNK_INDEX: Final = 10**_CHUNK_DIGITS - 1


def check_key_component(kind: str, value: str) -> str:
    """Return ``value`` if it is safe as one path or key component, else raise ``ValueError``.

    Ids come from run ids and step names that users influence; a ``/`` or ``..`` would
    let one run read or delete another's results (or, on disk, anything else).
    """
    if (
        not value
        or value in {".", ".."}
        or any(c in value for c in _FORBIDDEN)
        or (os.altsep is not None and os.altsep in value)
    ):
        raise ValueError(
            f"{kind} {value!r} cannot be used as a storage key: it must be non-empty, "
            "not '.' or '..', and contain no '/', '\\', NUL, CR or LF"
        )
    return value


def check_key(run_id: str, step: str = "-", result_id: str = "-") -> None:
    """Check every component of a result's key (``-`` stands for "not part of this key")."""
    check_key_component("run id", run_id)
    check_key_component("step", step)
    check_key_component("result id", result_id)


def check_result_id(result_id: str) -> str:
    """A result id for ``save``: a safe key component that is not a chunk id."""
    check_key_component("result id", result_id)
    if is_chunk_id(result_id):
        raise ValueError(
            f"result id {result_id!r} cannot be used as a storage key: ids of the form "
            f"{_CHUNK_PREFIX}NNNNNNNNNN are chunks; save them with save_chunk"
        )
    return result_id


def chunk_result_id(index: int) -> str:
    """The result id of chunk ``index``: zero-padded so names sort in chunk order."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_CHUNK_INDEX:
        raise ValueError(
            f"chunk index {index!r} cannot be used as a storage key: it must be an int "
            f"from 0 to {MAX_CHUNK_INDEX}"
        )
    return f"{_CHUNK_PREFIX}{index:0{_CHUNK_DIGITS}d}"


def is_chunk_id(result_id: str) -> bool:
    """Whether ``result_id`` names a chunk (``chunk_result_id``)."""
    return _CHUNK_ID.fullmatch(result_id) is not None


def chunk_index(result_id: str) -> int | None:
    """The index a chunk id names; None for any other result id."""
    match = _CHUNK_ID.fullmatch(result_id)
    return int(match.group(1)) if match else None


def split_name(name: str) -> tuple[str, Serializer] | None:
    """``(result id, format)`` of a stored file or object name; None if it is no result."""
    for serializer, suffix in SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], serializer
    return None


def is_arrow_table(value: object) -> bool:
    """Whether ``value`` is a ``pyarrow.Table`` or ``RecordBatch``, without importing pyarrow."""
    kind = type(value)
    return kind.__module__.split(".", 1)[0] == "pyarrow" and kind.__name__ in {
        "Table",
        "RecordBatch",
    }


def choose_serializer(value: object, serializer: Serializer | None) -> Serializer:
    """The format to store ``value`` in: the caller's choice, else Parquet or JSON."""
    if serializer is None:
        return "parquet" if is_arrow_table(value) else "json"
    if serializer not in SUFFIXES:
        raise ValueError(f"unknown serializer {serializer!r}; use 'json', 'parquet' or 'pickle'")
    return serializer


def encode_value(value: Any, serializer: Serializer | None, where: str) -> tuple[Serializer, bytes]:
    """Serialise ``value``; returns the format chosen and the bytes.

    Raises:
        TypeError: JSON (or Parquet) cannot hold ``value``; the message names ``where``.
        MissingExtraError: Parquet was chosen and pyarrow is not installed.
    """
    chosen = choose_serializer(value, serializer)
    if chosen == "pickle":
        return chosen, _PICKLE_FRAME + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if chosen == "parquet":
        return chosen, _encode_parquet(value, where)
    try:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"result {where} is not JSON-serialisable ({exc}); return JSON data, a "
            "pyarrow.Table (stored as Parquet), or save it with serializer='pickle'"
        ) from exc
    return chosen, data.encode()


def decode_value(data: bytes, serializer: Serializer, where: str = "") -> Any:
    """The value ``encode_value`` serialised.

    Raises:
        ResultFormatError: a pickle without the codec's frame header.
        MissingExtraError: a Parquet result and pyarrow is not installed.
    """
    if serializer == "pickle":
        if not data.startswith(_PICKLE_FRAME):
            raise ResultFormatError(
                where=where or "(pickle)",
                reason="it is stored as pickle but was not written by Relay's codec, and "
                "unpickling it could run any code; save it again with serializer='pickle'",
            )
        # Safe as far as the store is: Relay framed it, and only when asked for pickle.
        return pickle.loads(data[len(_PICKLE_FRAME) :])
    if serializer == "parquet":
        parquet = _pyarrow("pyarrow.parquet", "loading a Parquet result")
        return parquet.read_table(io.BytesIO(data))
    return json.loads(data)


def _encode_parquet(value: Any, where: str) -> bytes:
    pyarrow = _pyarrow("pyarrow", "saving a result as Parquet")
    parquet = _pyarrow("pyarrow.parquet", "saving a result as Parquet")
    if isinstance(value, pyarrow.RecordBatch):
        value = pyarrow.Table.from_batches([value])
    elif isinstance(value, list) and all(isinstance(row, Mapping) for row in value):
        value = pyarrow.Table.from_pylist(value)
    if not isinstance(value, pyarrow.Table):
        raise TypeError(
            f"result {where} cannot be stored as Parquet: it is a {type(value).__name__}; "
            "return a pyarrow.Table, a RecordBatch or a list of row dicts"
        )
    buffer = io.BytesIO()
    parquet.write_table(value, buffer)
    return buffer.getvalue()


def _pyarrow(module: str, feature: str) -> Any:
    """Import a pyarrow module on first use; ``MissingExtraError`` names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature=feature, module="pyarrow", extra="arrow") from exc
