"""The task registry: unique names, lookups by name and by tag pattern, dependency checks."""

from __future__ import annotations

import pytest

from core.errors import DefinitionError, UnknownTaskError
from core.tasks import TaskRegistry, tag_matches, task
from tests.support.pipelines import synthetic_task


def test_tasks_are_found_by_name() -> None:
    """``get`` returns the registered task; names are listed sorted."""
    a, b = synthetic_task("b_task"), synthetic_task("a_task")
    registry = TaskRegistry([a, b])
    assert registry.get("b_task") is a
    assert registry.names() == ["a_task", "b_task"]
    assert "a_task" in registry and "zzz" not in registry
    assert len(registry) == 2
    assert [t.name for t in registry] == ["a_task", "b_task"]


def test_an_unknown_name_suggests_close_ones() -> None:
    """The error lists what is registered and the nearest names."""
    registry = TaskRegistry([synthetic_task("transform"), synthetic_task("load")])
    with pytest.raises(
        UnknownTaskError, match=r"did you mean 'transform'\?.*known: load, transform"
    ):
        registry.get("transfrom")


def test_two_different_tasks_cannot_share_a_name() -> None:
    """A duplicate name is a DefinitionError naming both functions; the same task twice is fine."""
    first = synthetic_task("load")
    registry = TaskRegistry([first])
    registry.register(first)
    with pytest.raises(DefinitionError, match="two different tasks are named 'load'"):
        registry.register(synthetic_task("load"))


def test_only_tasks_can_be_registered() -> None:
    """A bare function is refused with the fix."""

    def plain() -> None:
        return None

    with pytest.raises(DefinitionError, match="decorate the function with @task"):
        TaskRegistry().register(plain)  # type: ignore[arg-type]


def test_one_task_can_sit_in_several_registries() -> None:
    """Registries hold references: registering elsewhere changes nothing about the task."""

    @task(tags=["shared"])
    def shared() -> int:
        return 1

    one, two = TaskRegistry([shared]), TaskRegistry([shared, synthetic_task("other")])
    assert one.get("shared") is two.get("shared") is shared
    assert one.names() == ["shared"]


def test_unknown_dependencies_are_reported_by_validate() -> None:
    """Dependencies may be registered later; ``validate`` names the task with a bad one."""
    registry = TaskRegistry([synthetic_task("load", control_upstream=["transfrom"])])
    with pytest.raises(
        UnknownTaskError, match="dependencies= of task 'load' names task 'transfrom'"
    ):
        registry.validate()
    registry.register(synthetic_task("transfrom"))
    registry.validate()


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("etl", "etl", True),
        ("etl", "etl.extract", False),
        ("etl.*", "etl.extract", True),
        ("etl.*", "etl", False),
        ("etl.*", "etl.extract.daily", False),
        ("etl.**", "etl", True),
        ("etl.**", "etl.extract.daily", True),
        ("**", "anything.at.all", True),
        ("*.extract", "etl.extract", True),
        ("*.extract", "etl.load", False),
        ("etl.**.daily", "etl.daily", True),
        ("etl.**.daily", "etl.a.b.daily", True),
        ("etl.**.daily", "etl.a.b.weekly", False),
        ("e-t_l.*", "e-t_l.x", True),
    ],
)
def test_tag_patterns_follow_the_topic_wildcards(pattern: str, tag: str, expected: bool) -> None:
    """``*`` is one segment, ``**`` any number (none included), as for event topics."""
    assert tag_matches(pattern, tag) is expected


def test_find_returns_tasks_with_any_matching_tag_sorted_by_name() -> None:
    """Several patterns select the union; each task once."""
    registry = TaskRegistry(
        [
            synthetic_task("load", tags=["etl.load", "daily"]),
            synthetic_task("extract", tags=["etl.extract"]),
            synthetic_task("report", tags=["reports"]),
        ]
    )
    assert [t.name for t in registry.find("etl.*")] == ["extract", "load"]
    assert [t.name for t in registry.find("daily", "etl.**")] == ["extract", "load"]
    assert [t.name for t in registry.find("reports")] == ["report"]
    assert registry.find("nothing.*") == []
    assert registry.tags() == ["daily", "etl.extract", "etl.load", "reports"]


def test_a_malformed_pattern_is_a_definition_error() -> None:
    """A bad segment is named."""
    with pytest.raises(DefinitionError, match="invalid segment 'e\\*'"):
        TaskRegistry().find("e*.x")
    with pytest.raises(DefinitionError, match="invalid segment ''"):
        TaskRegistry().find("etl..x")
