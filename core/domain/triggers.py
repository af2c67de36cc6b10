"""What starts runs besides an HTTP call: event topics and cron schedules.

Topics are dot-separated segments. In a pattern, ``*`` matches exactly one segment and
``**`` matches any number of segments (including none): ``orders.*.created`` matches
``orders.eu.created``; ``orders.**`` matches ``orders`` and ``orders.eu.created``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import DefinitionError

_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]+$")


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid topic pattern.

    Raises:
        DefinitionError: naming the bad segment.
    """
    for segment in pattern.split("."):
        if segment not in ("*", "**") and not _SEGMENT.match(segment):
            raise DefinitionError(
                f"topic pattern {pattern!r} has an invalid segment {segment!r}; "
                "use letters, digits, '_', '-', '*' or '**' between dots"
            )
    return pattern


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a concrete topic (no wildcards), else raise ValueError."""
    segments = topic.split(".")
    if not topic or not all(_SEGMENT.match(s) for s in segments):
        raise ValueError(f"topic {topic!r} must be dot-separated letters, digits, '_' or '-'")
    return topic


def topic_matches(pattern: str, topic: str) -> bool:
    """True when ``topic`` matches ``pattern`` (``*`` one segment, ``**`` any number)."""
    return _match(pattern.split("."), topic.split("."))


def _match(pattern: list[str], topic: list[str]) -> bool:
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, topic[i:]) for i in range(len(topic) + 1))
    if not topic:
        return False
    return (head == "*" or head == topic[0]) and _match(rest, topic[1:])


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Start a run of a saga for each event whose topic matches ``pattern``.

    ``input_from`` maps the event (``{"topic", "data", "id"}``) to the run input; by
    default the event's ``data`` is the input.
    """

    pattern: str
    input_from: Callable[[dict[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        validate_pattern(self.pattern)

    def build_input(self, event: dict[str, Any]) -> Any:
        """The run input for ``event``."""
        return self.input_from(event) if self.input_from else event.get("data")


@dataclass(frozen=True, slots=True)
class Schedule:
    """Start a run of a saga on a cron schedule.

    The run for one scheduled time is started at most once: its id derives from the
    schedule name and the time, so a retried or duplicated invocation finds the same run.
    """

    name: str
    cron: str
    input: Any = field(default_factory=dict)
    timezone: str = "UTC"
    description: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z][a-z0-9-]{0,62}$", self.name):
            raise DefinitionError(
                f"schedule name {self.name!r} must be lowercase letters, digits or '-', "
                "starting with a letter (Cloud Scheduler and EventBridge job naming)"
            )
        from core.scheduling import check_cron  # croniter is imported only where used

        check_cron(self.cron, self.timezone, where=f"schedule {self.name!r}")
