"""Runs one step or compensation function with a timeout and classifies the outcome.

``AttemptExecutor`` is the seam the runner calls user code through: ``StepExecutor`` is
the real one, and the composition root wraps it (``core.faults.FaultInjectingExecutor``)
only when ``RELAY_FAULTS`` is set, so the runner itself knows nothing of fault injection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from dataclasses import dataclass, replace
from typing import Any, Protocol

from core.domain.context import StepContext
from core.domain.errors_text import (
    MAX_DETAIL_CHARS,
    MAX_PUBLIC_CHARS,
    ErrorText,
    Redactor,
    describe_exception,
    describe_failure_value,
)
from core.domain.retry_policy import RetryPolicy
from core.domain.saga import StepFunction
from core.errors import NonRetryableStepError
from core.result import Failure, Success


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt produced: a value, or an error and whether to retry it.

    ``error`` is the public text, ``error_detail`` the full one (None: the same as
    ``error``); ``SharedSteps.attempt`` redacts both before anything stores or logs them.
    """

    is_success: bool
    value: Any = None
    error: str | None = None
    is_retryable: bool = True
    error_detail: str | None = None

    @classmethod
    def failure(cls, text: ErrorText, *, is_retryable: bool) -> AttemptOutcome:
        """A failed attempt described by ``text``."""
        return cls(
            is_success=False, error=text.public, error_detail=text.detail, is_retryable=is_retryable
        )

    @property
    def detail(self) -> str | None:
        """The full error text (the public one when there is nothing more)."""
        return self.error_detail if self.error_detail is not None else self.error

    def redacted(self, redactor: Redactor) -> AttemptOutcome:
        """The outcome with secrets removed from both error texts."""
        if self.error is None and self.error_detail is None:
            return self
        error, detail = self.error, self.detail
        return replace(
            self,
            error=None if error is None else redactor.redact_bounded(error, MAX_PUBLIC_CHARS),
            error_detail=None
            if detail is None
            else redactor.redact_bounded(detail, MAX_DETAIL_CHARS),
        )


class AttemptExecutor(Protocol):
    """Runs one attempt of a step or compensation function for the runner."""

    def run(
        self, fn: StepFunction, ctx: StepContext, *, timeout_seconds: float, retry: RetryPolicy
    ) -> AttemptOutcome:
        """Call ``fn(ctx)`` within ``timeout_seconds`` and classify what happened.

        An implementation may also never return (an injected crash ends the process):
        the step's effects then happened and its result is not committed, which the
        protocol heals like any crashed worker.
        """
        ...

    def describe(self) -> str:
        """A one-line summary for startup logs."""
        ...

    def close(self) -> None:
        """Release what the executor holds (threads)."""
        ...


class StepExecutor:
    """Calls user functions; sync ones in a thread so a timeout can abandon them.

    Python cannot kill a thread, so a sync function that overruns keeps running in the
    background while its attempt is recorded as timed out. That is why steps receive an
    idempotency key: the late call and the retry must be the same operation to the
    outside world. Cloud hosts bound this by killing the instance at its own timeout.
    """

    def __init__(self, *, max_threads: int = 64) -> None:
        self._max_threads = max_threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._max_threads, thread_name_prefix="relay-step"
                )
            return self._pool

    def run(
        self, fn: StepFunction, ctx: StepContext, *, timeout_seconds: float, retry: RetryPolicy
    ) -> AttemptOutcome:
        """Call ``fn(ctx)`` and turn its return value or exception into an outcome."""
        try:
            if inspect.iscoroutinefunction(fn):
                returned = asyncio.run(asyncio.wait_for(fn(ctx), timeout_seconds))
            else:
                future = self._executor().submit(fn, ctx)
                returned = future.result(timeout=timeout_seconds)
                if inspect.isawaitable(returned):
                    returned = asyncio.run(asyncio.wait_for(_await(returned), timeout_seconds))
        except (TimeoutError, concurrent.futures.TimeoutError):
            return AttemptOutcome(
                is_success=False, error=f"timed out after {timeout_seconds:g}s", is_retryable=True
            )
        except NonRetryableStepError as exc:
            return AttemptOutcome.failure(describe_exception(exc), is_retryable=False)
        except Exception as exc:
            return AttemptOutcome.failure(
                describe_exception(exc), is_retryable=retry.is_retryable_type(exc)
            )
        return _classify(returned, retry)

    def describe(self) -> str:
        """Names the executor and its thread limit."""
        return f"step functions on up to {self._max_threads} threads"

    def close(self) -> None:
        """Stop the thread pool (tests and graceful shutdown)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _classify(returned: Any, retry: RetryPolicy) -> AttemptOutcome:
    if isinstance(returned, Success):
        return AttemptOutcome(is_success=True, value=returned.value)
    if isinstance(returned, Failure):
        error = returned.error
        if isinstance(error, BaseException):
            retryable = not isinstance(error, NonRetryableStepError) and retry.is_retryable_type(
                error
            )
            return AttemptOutcome.failure(describe_exception(error), is_retryable=retryable)
        # A Failure carrying a plain value is a deliberate business outcome (declined,
        # out of stock): the same input would fail again, so it is not retried.
        return AttemptOutcome.failure(describe_failure_value(error), is_retryable=False)
    return AttemptOutcome(is_success=True, value=returned)
