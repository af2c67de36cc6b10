"""What every I/O manager adapter shares: safe key components and the value codecs.

The rules live next to the port so the filesystem, memory, S3 and GCS adapters cannot
drift apart: a run id that one backend refuses must be refused by all of them, and a
value stored by one reads back the same way from any other.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from typing import Any, Final

from core.ports.io_manager import Serializer

SUFFIXES: Final[Mapping[Serializer, str]] = {"json": ".json", "pickle": ".pkl"}
"""File or object name suffix per format; the suffix is how ``load`` knows the format."""

_FORBIDDEN: Final = ("/", "\\", "\x00", "\r", "\n")
"""Path separators and NUL, plus CR and LF, which Cloud Storage refuses in object names."""

CONTENT_TYPES: Final[Mapping[Serializer, str]] = {
    "json": "application/json",
    "pickle": "application/x-python-pickle",
}


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


def encode_value(value: Any, serializer: Serializer, where: str) -> bytes:
    """Serialise ``value``; ``TypeError`` naming ``where`` when JSON cannot hold it."""
    if serializer == "pickle":
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if serializer != "json":
        raise ValueError(f"unknown serializer {serializer!r}; use 'json' or 'pickle'")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"result {where} is not JSON-serialisable ({exc}); return JSON data or save "
            "it with serializer='pickle'"
        ) from exc


def decode_value(data: bytes, serializer: Serializer) -> Any:
    """The value ``encode_value`` serialised."""
    if serializer == "pickle":
        return pickle.loads(data)  # Safe: Relay wrote it, and only when asked for pickle.
    return json.loads(data)
