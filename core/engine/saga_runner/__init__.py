"""The step protocol, in one package.

``SagaRunner`` loads the run and dispatches each message to its path (``execute``,
``compensate``, ``waits``), which share ``shared`` and ``forward``.
"""

from __future__ import annotations

from core.engine.saga_runner.results import HandleResult, Outcome, RunnerSettings
from core.engine.saga_runner.runner import SagaRunner
from core.engine.saga_runner.waits import buffered_event

__all__ = ["HandleResult", "Outcome", "RunnerSettings", "SagaRunner", "buffered_event"]
