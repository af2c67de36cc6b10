"""Relay's engine: sagas, the durable step protocol, and the ports adapters implement.

Only the names in ``__all__`` are public; modules starting with ``_`` are internal.
"""

from core.domain.context import StepContext
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
    StepFailed,
)
from core.result import Failure, Result, Success

__all__ = [
    "Action",
    "CompensationFailed",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DefinitionError",
    "EngineError",
    "Failure",
    "InputValidationError",
    "Message",
    "NonRetryableStepError",
    "Result",
    "RetryPolicy",
    "RunId",
    "RunRecord",
    "RunSnapshot",
    "RunStatus",
    "Saga",
    "StepContext",
    "StepFailed",
    "StepName",
    "StepRecord",
    "StepStatus",
    "Success",
]
