"""Pipelines: selection by name and tag, data flow by parameter name, plans and their checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from pydantic import BaseModel, ValidationError

from core.errors import (
    DefinitionError,
    DependencyCycleError,
    SchemaMismatchError,
    UnknownTaskError,
)
from core.tasks import Edge, Pipeline, TaskRegistry, plan_pipeline, task
from tests.support.pipelines import synthetic_task


class Order(BaseModel):
    id: int
    cents: int


@task(tags=["shop.extract"])
def orders(day: str, limit: int = 100) -> list[Order]:
    return [Order(id=i, cents=i * 100) for i in range(limit)]


@task(tags=["shop.transform"])
def amounts(orders: Sequence[Order], currency: str = "EUR") -> list[float]:
    return [o.cents / 100 for o in orders]


@task(tags=["shop.audit"], fail_safe=True)
def audit(orders: list[Order]) -> list[str]:
    return []


@task(tags=["shop.load"], dependencies=["audit"])
def total(amounts: list[float], limit: int = 100) -> float:
    return sum(amounts)


@task(stream_output=True, tags=["stream"])
def chunks(limit: int = 100) -> Iterator[int]:
    yield from range(limit)


@task(tags=["stream"])
def count(chunks: list[int]) -> int:
    return len(chunks)


SHOP = TaskRegistry([orders, amounts, audit, total, chunks, count])


def test_a_parameter_named_after_a_task_receives_its_output() -> None:
    """Data edges come from parameter names; ``dependencies=`` adds a control edge."""
    plan = Pipeline("shop", tags=["shop.**"], registry=SHOP).plan()
    assert plan.edges == (
        Edge("amounts", "total", "amounts"),
        Edge("audit", "total", None),
        Edge("orders", "amounts", "orders"),
        Edge("orders", "audit", "orders"),
    )
    node = plan.nodes["total"]
    assert node.data_inputs == {"amounts": "amounts"}
    assert node.control_upstream == ("audit",)
    assert node.upstream == ("amounts", "audit")
    assert node.pipeline_inputs == ("limit",)
    assert plan.nodes["orders"].downstream == ("amounts", "audit")
    assert plan.nodes["audit"].fail_safe and plan.nodes["audit"].max_retries == 2


def test_levels_and_order_are_deterministic() -> None:
    """Level k waits only for levels below it; names sort within a level."""
    plan = Pipeline("shop", tags=["shop.**"], registry=SHOP).plan()
    assert plan.levels == (("orders",), ("amounts", "audit"), ("total",))
    assert plan.order == ("orders", "amounts", "audit", "total")
    assert [n.level for n in plan.nodes.values()] == [0, 1, 1, 2]


def test_unfed_parameters_become_the_pipeline_input() -> None:
    """Required when a task has no default; shared names are one field."""
    plan = Pipeline("shop", tags=["shop.**"], registry=SHOP).plan()
    fields = {i.name: (i.is_required, i.default, i.used_by) for i in plan.inputs}
    assert fields == {
        "currency": (False, "EUR", ("amounts",)),
        "day": (True, None, ("orders",)),
        "limit": (False, 100, ("orders", "total")),
    }
    model = plan.input_model
    assert model.model_validate({"day": "2026-12-02"}).model_dump(by_alias=True) == {
        "currency": "EUR",
        "day": "2026-12-02",
        "limit": 100,
    }
    with pytest.raises(ValidationError):
        model.model_validate({"limit": 3})
    with pytest.raises(ValidationError):
        model.model_validate({"day": "x", "unknown": 1})
    assert plan.input_schema()["required"] == ["day"]


def test_asking_for_a_task_brings_its_upstreams() -> None:
    """Hamilton's rule: a selected task pulls in what it depends on, data or control."""
    plan = Pipeline("totals", tasks=["total"], registry=SHOP).plan()
    assert set(plan.order) == {"orders", "amounts", "audit", "total"}
    plan = plan_pipeline("objects", [total, amounts, orders, audit])
    assert plan.levels[-1] == ("total",)


def test_a_streaming_task_feeds_the_list_of_its_chunks() -> None:
    """``list[int]`` is what ``count`` receives from a task yielding ints."""
    plan = Pipeline("stream", tags=["stream"], registry=SHOP).plan()
    assert plan.nodes["chunks"].stream_output
    assert plan.order == ("chunks", "count")


def test_the_same_structure_has_the_same_hash() -> None:
    """Declaration order, selection style and pipeline name do not change the hash."""
    by_tag = Pipeline("a", tags=["shop.**"], registry=SHOP).plan()
    by_object = Pipeline("b", tasks=[total, audit, amounts, orders]).plan()
    assert by_tag.hash == by_object.hash
    assert len(by_tag.hash) == 16
    other = Pipeline("c", tags=["shop.extract", "shop.transform"], registry=SHOP).plan()
    assert other.hash != by_tag.hash


def test_a_cycle_is_named_with_its_path() -> None:
    """The error lists a real cycle, first task repeated last."""
    tasks = [
        synthetic_task("a", ["c"]),
        synthetic_task("b", ["a"]),
        synthetic_task("c", [], ["b"]),
        synthetic_task("d", ["a"]),
    ]
    with pytest.raises(DependencyCycleError, match="a -> b -> c -> a") as caught:
        plan_pipeline("loop", tasks)
    assert caught.value.cycle == ["a", "b", "c", "a"]
    with pytest.raises(DependencyCycleError, match="self -> self"):
        plan_pipeline("self", [synthetic_task("self", ["self"])])


def test_a_type_mismatch_names_both_tasks_and_both_types() -> None:
    """An upstream output that cannot feed the parameter fails before any run."""
    source = synthetic_task("src", output=int | None)
    sink = synthetic_task("sink", ["src"], parameter_type=int)
    with pytest.raises(SchemaMismatchError) as caught:
        plan_pipeline("typed", [source, sink])
    error = caught.value
    assert (error.upstream, error.downstream, error.parameter) == ("src", "sink", "src")
    assert (error.upstream_type, error.parameter_type) == ("int | None", "int")
    assert "task 'src' returns int | None, which cannot feed parameter 'src': int" in str(error)
    assert "of task 'sink'" in str(error)


def test_a_subclass_output_feeds_a_base_parameter_but_not_the_reverse() -> None:
    """Checked with the rules of core/tasks/types.py."""
    plan_pipeline("ok", [synthetic_task("s", output=bool), synthetic_task("t", ["s"])])
    with pytest.raises(SchemaMismatchError, match="returns float"):
        plan_pipeline("no", [synthetic_task("s", output=float), synthetic_task("t", ["s"])])


def test_an_unknown_dependency_is_named_with_the_task_that_wants_it() -> None:
    """``dependencies=`` naming nothing known is an UnknownTaskError with suggestions."""
    with pytest.raises(UnknownTaskError, match="dependencies= of task 'load' names task 'extrac'"):
        plan_pipeline("etl", [synthetic_task("extract"), synthetic_task("load", [], ["extrac"])])


def test_selection_errors_say_what_to_fix() -> None:
    """Unknown names, empty tag matches, missing registries and empty pipelines."""
    with pytest.raises(UnknownTaskError, match=r"pipeline 'p' names task 'totl'.*'total'"):
        Pipeline("p", tasks=["totl"], registry=SHOP).plan()
    with pytest.raises(DefinitionError, match=r"tag pattern 'nope\.\*' matches no registered"):
        Pipeline("p", tags=["nope.*"], registry=SHOP).plan()
    with pytest.raises(DefinitionError, match="has no registry= to look them up in"):
        Pipeline("p", tags=["shop"])
    with pytest.raises(DefinitionError, match="selects no task"):
        Pipeline("p")
    with pytest.raises(DefinitionError, match="pipeline name 'a b' is invalid"):
        Pipeline("a b", tasks=[total])


def test_two_tasks_under_one_name_are_refused() -> None:
    """Two different task objects cannot both be ``load`` in one pipeline."""
    with pytest.raises(DefinitionError, match="two different tasks named 'load'"):
        plan_pipeline("p", [synthetic_task("load"), synthetic_task("load")])


def test_inputs_shared_by_tasks_must_agree() -> None:
    """One input field, one type and one default, or a DefinitionError naming the tasks."""

    @task
    def first(size: int = 1) -> int:
        return size

    @task
    def second(size: str = "1") -> int:
        return 0

    @task
    def third(size: int = 2) -> int:
        return size

    with pytest.raises(DefinitionError, match="'first' and 'second' both take input 'size'"):
        plan_pipeline("p", [first, second])
    with pytest.raises(DefinitionError, match="different defaults"):
        plan_pipeline("p", [first, third])


def test_the_plan_as_json_has_order_levels_edges_and_schemas() -> None:
    """What ``relay plan --json`` prints."""
    document = Pipeline("shop", tags=["shop.**"], registry=SHOP).plan().to_json()
    assert document["name"] == "shop"
    assert document["order"] == ["orders", "amounts", "audit", "total"]
    assert document["levels"] == [["orders"], ["amounts", "audit"], ["total"]]
    assert {"from": "audit", "to": "total", "parameter": None, "kind": "control"} in document[
        "edges"
    ]
    first = document["tasks"][0]
    assert first["name"] == "orders" and first["pipeline_inputs"] == ["day", "limit"]
    assert first["output_type"].endswith("Order]")
    assert first["input_schema"]["required"] == ["day"]
    assert document["input_schema"]["required"] == ["day"]
    assert "input_schema" not in Pipeline("s", tasks=[orders]).plan().to_json(include_schemas=False)


def test_the_mermaid_diagram_draws_data_and_control_edges() -> None:
    """Data edges carry their type; control edges are dotted; fail_safe is marked."""
    diagram = Pipeline("shop", tags=["shop.**"], registry=SHOP).plan().mermaid()
    assert diagram.splitlines()[0] == "flowchart TD"
    assert 't2["audit (fail_safe)"]' in diagram
    assert "t2 -.-> t3" in diagram
    assert 't0 -->|"list[Order]"| t1' in diagram


def test_a_plan_is_computed_once() -> None:
    """``plan()`` returns the same object on every call."""
    pipeline = Pipeline("shop", tags=["shop.**"], registry=SHOP)
    assert pipeline.plan() is pipeline.plan()
