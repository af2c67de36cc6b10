"""The exception hierarchy of the Relay engine.

Every error the engine raises derives from :class:`EngineError`; retryability is a
class attribute so callers (``functions/``) map errors to platform outcomes without
parsing messages::

    EngineError
    ├── ConfigurationError
    │   └── MissingExtraError
    ├── DefinitionError
    │   ├── UnknownTaskError
    │   ├── DependencyCycleError
    │   └── SchemaMismatchError
    ├── InputValidationError
    ├── UnknownSagaError
    ├── UnknownPipelineError
    ├── RunNotFoundError
    ├── InvalidRunStateError
    ├── IllegalTransitionError
    ├── IdempotencyKeyReusedError
    ├── InvalidIdempotencyKeyError
    ├── ConcurrencyConflict
    ├── RequestRejected
    ├── InfrastructureError            (retryable)
    │   ├── StoreUnavailable           (retryable)
    │   └── QueueUnavailable           (retryable)
    ├── ResultFormatError
    ├── InputTooLargeError
    ├── NonRetryableStepError
    └── CompensationFailed
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class EngineError(Exception):
    """Raised for any failure the engine itself detects; the root of the hierarchy."""

    retryable: ClassVar[bool] = False


class ConfigurationError(EngineError):
    """Raised when settings are missing or inconsistent (backend name, data dir, keys)."""


class MissingExtraError(ConfigurationError):
    """Raised when a feature needs an optional dependency that is not installed."""

    def __init__(self, *, feature: str, module: str, extra: str) -> None:
        self.feature = feature
        self.module = module
        self.extra = extra
        super().__init__(
            f"{feature} needs {module}, which is not installed; install Relay's "
            f"'{extra}' extra: pip install 'relay[{extra}]'"
        )


class DefinitionError(EngineError):
    """Raised when a saga or DAG definition is invalid (duplicate step, unknown dependency)."""


class UnknownTaskError(DefinitionError):
    """Raised when a task name (a lookup, a dependency, a pipeline's selection) is not known."""

    def __init__(self, *, task: str, known: Sequence[str], wanted_by: str | None = None) -> None:
        self.task = task
        self.known = sorted(known)
        self.wanted_by = wanted_by
        where = f"{wanted_by} names" if wanted_by else "there is no"
        close = difflib.get_close_matches(task, self.known, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        names = ", ".join(self.known) or "none"
        super().__init__(f"{where} task {task!r}, which is not registered{hint} (known: {names})")


class DependencyCycleError(DefinitionError):
    """Raised when a pipeline's tasks depend on each other in a cycle.

    ``cycle`` is a real cycle, first name repeated last: ``["a", "b", "a"]``.
    """

    def __init__(self, *, pipeline: str, cycle: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.cycle = list(cycle)
        super().__init__(
            f"pipeline {pipeline!r} has a dependency cycle: {' -> '.join(self.cycle)}; "
            "remove one of these edges (a parameter named after a task, or dependencies=)"
        )


class SchemaMismatchError(DefinitionError):
    """Raised when an upstream task's output type cannot feed a downstream parameter."""

    def __init__(
        self,
        *,
        pipeline: str,
        upstream: str,
        downstream: str,
        parameter: str,
        upstream_type: str,
        parameter_type: str,
    ) -> None:
        self.pipeline = pipeline
        self.upstream = upstream
        self.downstream = downstream
        self.parameter = parameter
        self.upstream_type = upstream_type
        self.parameter_type = parameter_type
        super().__init__(
            f"pipeline {pipeline!r}: task {upstream!r} returns {upstream_type}, which cannot "
            f"feed parameter {parameter!r}: {parameter_type} of task {downstream!r}; change "
            "one of the two annotations, or rename the parameter if it should not receive "
            f"{upstream!r}'s output"
        )


class InputValidationError(EngineError):
    """Raised when a run's input does not match the saga's input model.

    ``errors`` holds one entry per bad field: ``{"loc": [...], "msg": ..., "type": ...}``.
    """

    def __init__(self, *, saga: str, errors: Sequence[Mapping[str, Any]]) -> None:
        self.saga = saga
        self.errors = [dict(e) for e in errors]
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) or "<root>" for e in errors)
        super().__init__(f"input for saga {saga!r} is invalid: {fields}")


class UnknownSagaError(EngineError):
    """Raised when a saga name is not registered in the bundle."""

    def __init__(self, *, saga: str, known: Sequence[str]) -> None:
        self.saga = saga
        self.known = list(known)
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown saga {saga!r}; this bundle serves: {names}")


class UnknownPipelineError(EngineError):
    """Raised when a pipeline name is not registered in the bundle."""

    def __init__(self, *, pipeline: str, known: Sequence[str]) -> None:
        self.pipeline = pipeline
        self.known = list(known)
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown pipeline {pipeline!r}; this bundle has: {names}")


class RunNotFoundError(EngineError):
    """Raised when a run id does not exist in the state store."""

    def __init__(self, *, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} not found")


class InvalidRunStateError(EngineError):
    """Raised when an operation is not allowed in the run's current status."""

    def __init__(self, *, run_id: str, status: str, operation: str, allowed: Sequence[str]) -> None:
        self.run_id = run_id
        self.status = status
        self.operation = operation
        super().__init__(
            f"cannot {operation} run {run_id!r} in status {status}; "
            f"allowed from: {', '.join(allowed)}"
        )


class IllegalTransitionError(EngineError):
    """Raised when the engine asks a record for a transition its status does not allow.

    It signals a bug in the engine's decisions (or a record edited by hand), never bad
    user input: the write is refused before anything is stored.
    """

    def __init__(
        self, *, record: str, transition: str, status: str, allowed: Sequence[str]
    ) -> None:
        self.record = record
        self.transition = transition
        self.status = status
        super().__init__(
            f"{record}: transition {transition!r} is not allowed from status {status}; "
            f"allowed from: {', '.join(allowed)}"
        )


class IdempotencyKeyReusedError(EngineError):
    """Raised when an idempotency key is reused with a different input."""

    def __init__(self, *, run_id: str, saga: str) -> None:
        self.run_id = run_id
        self.saga = saga
        super().__init__(
            f"idempotency key already started run {run_id!r} of saga {saga!r} "
            "with a different input; use a new key for a new run"
        )


class InvalidIdempotencyKeyError(EngineError):
    """Raised when a client's idempotency key is empty, too long or not printable ASCII."""

    def __init__(self, *, max_length: int) -> None:
        self.max_length = max_length
        super().__init__(f"an idempotency key must be 1 to {max_length} printable ASCII characters")


class ConcurrencyConflict(EngineError):
    """Raised when a conditional write finds a record changed since it was read."""

    def __init__(self, *, run_id: str, detail: str) -> None:
        self.run_id = run_id
        self.detail = detail
        super().__init__(f"concurrent update of run {run_id!r}: {detail}")


class RequestRejected(EngineError):
    """Raised when a backing service refuses a request as invalid: retrying cannot help.

    The request is the problem, not the service's health: an item, document or message
    over the service's size limit (a DynamoDB item over 400 KB, a Firestore document over
    1 MiB, an SQS message over 1 MiB) or a value the service does not accept. Every
    cloud adapter raises this one type for such refusals, checked on the emulators by
    ``tests/contract/test_request_rejected.py``. Not an ``InfrastructureError``: those
    ask for a redelivery later (a 503, a deferred SQS record), which would only repeat
    the refusal; a rejected delivery is dropped as poison, a rejected start answers 422.
    """

    def __init__(self, *, service: str, operation: str, reason: str, check: str) -> None:
        self.service = service
        self.operation = operation
        self.reason = reason
        super().__init__(f"{service} rejected {operation}: {reason}; check {check}")


class InfrastructureError(EngineError):
    """Raised when a backing service fails; worth retrying later."""

    retryable: ClassVar[bool] = True


class StoreUnavailable(InfrastructureError):
    """Raised when the state store cannot be reached or throttles."""


class QueueUnavailable(InfrastructureError):
    """Raised when the task queue cannot be reached or throttles."""


class ResultFormatError(EngineError):
    """Raised when a stored result cannot be read back in the format it claims to be in.

    A pickled result is loaded only when Relay's codec wrote it (its framing is checked
    before anything is unpickled); anything else stored under a ``.pkl`` name is refused.
    """

    def __init__(self, *, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"result {where} cannot be loaded: {reason}")


class InputTooLargeError(EngineError):
    """Raised when a run's input is too large to keep, inline or through the I/O manager.

    Nothing is written: the start request is refused (HTTP 422 ``input_too_large``).
    """

    def __init__(self, *, saga: str, size_bytes: int, limit_bytes: int, reason: str) -> None:
        self.saga = saga
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(
            f"input for saga {saga!r} is {size_bytes} bytes as JSON: {reason} "
            f"(limit {limit_bytes} bytes); send a smaller input or a reference to the data"
        )


class NonRetryableStepError(EngineError):
    """Raised by step code to fail the step at once, skipping remaining retries.

    Use it for business rejections (card declined, out of stock) where another attempt
    cannot succeed. The run's public ``error`` shows only the class name and a generic
    message unless ``public_message`` (keyword, or a class attribute of a subclass) says
    what every reader of the run may see; the full message goes to ``error_detail``,
    with secrets redacted (``core.domain.errors_text``).
    """

    public_message: str | None = None

    def __init__(self, *args: object, public_message: str | None = None) -> None:
        super().__init__(*args)
        if public_message is not None:
            self.public_message = public_message


class CompensationFailed(EngineError):
    """Raised when a compensation exhausts its retries; the run is left FAILED."""

    def __init__(self, *, run_id: str, step: str, attempt: int, reason: str) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self.reason = reason
        super().__init__(
            f"compensation of step {step!r} of run {run_id} failed on attempt {attempt}: {reason}; "
            f"fix the cause and run `relay runs retry {run_id}`"
        )
