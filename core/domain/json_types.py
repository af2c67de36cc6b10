"""The JSON types of the user API: what run input, step outputs and run output are.

Relay stores inputs and outputs as JSON (inline in a record or through the I/O manager),
so a value read back is a ``JSONValue``: precise enough that step code narrows it (or
validates it into a model with ``StepContext.output_of``) instead of trusting ``Any``.
"""

from __future__ import annotations

from typing import TypeAlias

JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None"
"""A JSON value as ``json.loads`` returns it."""

JSONObject: TypeAlias = "dict[str, JSONValue]"
"""A JSON object as ``json.loads`` returns it."""
