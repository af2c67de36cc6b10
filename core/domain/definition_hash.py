"""The content hash of a saga definition: its structure plus the code of every function.

A run records the hash of the definition it started under; a worker whose hash differs
checks the run's steps by name (DESIGN.md, "Versions"). The hash must be the same in
every process that loads the same code, so code objects are fingerprinted by their
bytecode, names and constants, never by ``repr`` (which holds memory addresses).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from types import CodeType

from core.domain.steps import StepDefinition


def definition_hash(saga_name: str, steps: Iterable[StepDefinition]) -> str:
    """16 hex digits naming the saga's structure and code."""
    digest = hashlib.sha256(saga_name.encode())
    for step in steps:
        digest.update(repr((step.name, step.after, step.timeout_seconds)).encode())
        if step.wait is not None:
            wait = step.wait
            digest.update(repr((wait.sleep_seconds, wait.topic, wait.timeout_seconds)).encode())
            digest.update(_code_fingerprint(wait.correlation))
        digest.update(_code_fingerprint(step.fn))
        if step.compensation:
            digest.update(_code_fingerprint(step.compensation.fn))
    return digest.hexdigest()[:16]


def _code_fingerprint(fn: Callable[..., object]) -> bytes:
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    if code is None:
        return repr(getattr(target, "__qualname__", target)).encode()
    return _fingerprint_code(code)


def _fingerprint_code(code: CodeType) -> bytes:
    # Nested code objects (lambdas, comprehensions) repr with their memory address, so
    # they are fingerprinted recursively to keep the hash stable across processes.
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(
            _fingerprint_code(const) if isinstance(const, CodeType) else repr(const).encode()
        )
    return b"\x00".join(parts)
