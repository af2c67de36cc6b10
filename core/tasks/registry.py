"""Tasks by name and by tag: what a pipeline selects its tasks from.

Tags are dot-separated (``etl.extract``) and lookups take the event topics' wildcards
(dp-poc's, ``core/domain/triggers.py``): ``*`` matches one segment, ``**`` any number,
none included. ``find("etl.*")`` matches ``etl.extract`` but not ``etl`` or
``etl.load.daily``; ``find("etl.**")`` matches all three.

A registry is an ordinary object, not a process-wide singleton: build one per bundle
(or per test) and hand it to the pipelines that select from it. It holds references to
tasks, so one task can sit in several registries.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from core.errors import DefinitionError, UnknownTaskError
from core.tasks.task import Task

_PATTERN_SEGMENT = re.compile(r"^(\*\*|\*|[A-Za-z0-9_\-]+)$")


def is_wildcard(pattern: str) -> bool:
    """True when ``pattern`` holds ``*`` or ``**`` (else it names one tag exactly)."""
    return "*" in pattern


@lru_cache(maxsize=1024)
def compile_tag_pattern(pattern: str) -> re.Pattern[str]:
    r"""The regular expression ``"." + tag`` must fully match for ``tag`` to match ``pattern``.

    Each segment is matched with its leading dot, so ``**`` can stand for no segment
    at all: ``etl.**`` is ``\.etl(?:\.[^.]+)*``.

    Raises:
        DefinitionError: a segment is empty or holds other characters than letters,
            digits, ``_``, ``-``, or is not exactly ``*`` or ``**``.
    """
    parts: list[str] = []
    for segment in pattern.split("."):
        if not _PATTERN_SEGMENT.match(segment):
            raise DefinitionError(
                f"tag pattern {pattern!r} has an invalid segment {segment!r}; use letters, "
                "digits, '_', '-', '*' (one segment) or '**' (any number) between dots"
            )
        if segment == "**":
            parts.append(r"(?:\.[^.]+)*")
        elif segment == "*":
            parts.append(r"\.[^.]+")
        else:
            parts.append(r"\." + re.escape(segment))
    return re.compile("".join(parts))


def tag_matches(pattern: str, tag: str) -> bool:
    """True when ``tag`` matches ``pattern`` (``*`` one segment, ``**`` any number)."""
    if not is_wildcard(pattern):
        return pattern == tag
    return compile_tag_pattern(pattern).fullmatch("." + tag) is not None


class TaskRegistry:
    """Tasks by unique name, with an index by tag.

    Args:
        tasks: Tasks to register at once (in any order).

    Raises:
        DefinitionError: two different tasks share a name.
    """

    def __init__(self, tasks: Iterable[Task[..., Any]] = ()) -> None:
        self._tasks: dict[str, Task[..., Any]] = {}
        self._by_tag: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        for item in tasks:
            self.register(item)

    def register(self, task: Task[..., Any]) -> Task[..., Any]:
        """Add ``task``; registering the same task again is a no-op.

        Dependencies may name tasks registered later: they are checked by
        :meth:`validate` and by every plan.

        Raises:
            DefinitionError: a different task is already registered under its name.
        """
        if not isinstance(task, Task):
            raise DefinitionError(
                f"only tasks can be registered, got {type(task).__name__}; decorate the "
                "function with @task first"
            )
        with self._lock:
            existing = self._tasks.get(task.name)
            if existing is task:
                return task
            if existing is not None:
                raise DefinitionError(
                    f"two different tasks are named {task.name!r} ({_where(existing)} and "
                    f"{_where(task)}); give one of them another name with @task(name=...)"
                )
            self._tasks[task.name] = task
            for tag in task.tags:
                self._by_tag.setdefault(tag, []).append(task.name)
        return task

    def get(self, name: str) -> Task[..., Any]:
        """The task called ``name``.

        Raises:
            UnknownTaskError: no such task (the message suggests close names).
        """
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(task=name, known=list(self._tasks)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task[..., Any]]:
        return iter([self._tasks[name] for name in self.names()])

    def names(self) -> list[str]:
        """Every task name, sorted."""
        return sorted(self._tasks)

    def tags(self) -> list[str]:
        """Every tag some task carries, sorted."""
        return sorted(self._by_tag)

    def find(self, *patterns: str) -> list[Task[..., Any]]:
        """Tasks carrying at least one tag that matches at least one pattern, by name.

        Raises:
            DefinitionError: a pattern is malformed.
        """
        names: set[str] = set()
        for pattern in patterns:
            if not is_wildcard(pattern):
                compile_tag_pattern(pattern)  # validates the spelling
                names.update(self._by_tag.get(pattern, ()))
                continue
            regex = compile_tag_pattern(pattern)
            for tag, tagged in self._by_tag.items():
                if regex.fullmatch("." + tag) is not None:
                    names.update(tagged)
        return [self._tasks[name] for name in sorted(names)]

    def validate(self) -> None:
        """Check that every dependency names a registered task.

        Raises:
            UnknownTaskError: naming the task whose ``dependencies=`` is wrong.
        """
        for task in self:
            for dep in task.dependencies:
                if dep not in self._tasks:
                    raise UnknownTaskError(
                        task=dep,
                        known=list(self._tasks),
                        wanted_by=f"dependencies= of task {task.name!r}",
                    )


def _where(task: Task[..., Any]) -> str:
    module = getattr(task.fn, "__module__", "?")
    qualname = getattr(task.fn, "__qualname__", "?")
    return f"{module}.{qualname}"
