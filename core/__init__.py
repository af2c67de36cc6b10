"""Relay's engine: sagas, the durable step protocol, and the ports adapters implement.

Only the names in ``__all__`` are public; modules starting with ``_`` are internal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.domain.context import StepContext
    from core.domain.json_types import JSONValue
    from core.domain.queues import QueueSettings
    from core.domain.records import Message, RunId, RunRecord, RunSnapshot, StepName, StepRecord
    from core.domain.retry_policy import RetryPolicy
    from core.domain.saga import Saga
    from core.domain.status import Action, RunStatus, StepStatus
    from core.errors import (
        CompensationFailed,
        ConcurrencyConflict,
        ConfigurationError,
        DefinitionError,
        EngineError,
        InputValidationError,
        NonRetryableStepError,
    )
    from core.result import Failure, Result, Success
    from core.tasks.pipeline import Pipeline
    from core.tasks.plan import PipelinePlan
    from core.tasks.registry import TaskRegistry
    from core.tasks.task import Task, task

# Resolved on first access (PEP 562): importing ``core.domain.records`` from an entry
# point must not pay for pydantic, which ``Saga`` needs and a health check does not.
_HOMES = {
    "StepContext": "core.domain.context",
    "JSONValue": "core.domain.json_types",
    "Message": "core.domain.records",
    "RunId": "core.domain.records",
    "RunRecord": "core.domain.records",
    "RunSnapshot": "core.domain.records",
    "StepName": "core.domain.records",
    "StepRecord": "core.domain.records",
    "QueueSettings": "core.domain.queues",
    "RetryPolicy": "core.domain.retry_policy",
    "Saga": "core.domain.saga",
    "Action": "core.domain.status",
    "RunStatus": "core.domain.status",
    "StepStatus": "core.domain.status",
    "CompensationFailed": "core.errors",
    "ConcurrencyConflict": "core.errors",
    "ConfigurationError": "core.errors",
    "DefinitionError": "core.errors",
    "EngineError": "core.errors",
    "InputValidationError": "core.errors",
    "NonRetryableStepError": "core.errors",
    "Failure": "core.result",
    "Result": "core.result",
    "Success": "core.result",
    "Pipeline": "core.tasks.pipeline",
    "PipelinePlan": "core.tasks.plan",
    "Task": "core.tasks.task",
    "TaskRegistry": "core.tasks.registry",
    "task": "core.tasks.task",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "Action",
    "CompensationFailed",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DefinitionError",
    "EngineError",
    "Failure",
    "InputValidationError",
    "JSONValue",
    "Message",
    "NonRetryableStepError",
    "Pipeline",
    "PipelinePlan",
    "QueueSettings",
    "Result",
    "RetryPolicy",
    "RunId",
    "RunRecord",
    "RunSnapshot",
    "RunStatus",
    "Saga",
    "StepContext",
    "StepName",
    "StepRecord",
    "StepStatus",
    "Success",
    "Task",
    "TaskRegistry",
    "task",
]
