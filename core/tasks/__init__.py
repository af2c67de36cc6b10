"""Task pipelines, the definition-time half: ``@task``, a registry, pipelines and their plans.

Declaring and planning import nothing beyond pydantic. ``core/tasks/runnable.py`` compiles a
plan onto the saga engine (one step per task); the registry does that when a pipeline is
first used, so importing this package does not import it.
"""

from __future__ import annotations

from core.tasks.pipeline import Pipeline, plan_pipeline
from core.tasks.plan import Edge, PipelineInput, PipelinePlan, PlanNode
from core.tasks.registry import TaskRegistry, tag_matches
from core.tasks.task import Task, TaskParameter, task
from core.tasks.types import is_assignable, type_name

__all__ = [
    "Edge",
    "Pipeline",
    "PipelineInput",
    "PipelinePlan",
    "PlanNode",
    "Task",
    "TaskParameter",
    "TaskRegistry",
    "is_assignable",
    "plan_pipeline",
    "tag_matches",
    "task",
    "type_name",
]
