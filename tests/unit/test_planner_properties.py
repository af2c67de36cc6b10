"""Planner properties on random DAGs (hypothesis): order, levels, hash, cycles."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import DependencyCycleError
from core.tasks import Task, plan_pipeline
from tests.support.pipelines import synthetic_task

# A graph: for each task, its data upstreams and its control upstreams.
Graph = dict[str, tuple[frozenset[str], frozenset[str]]]
MAX_TASKS = 14


@st.composite
def dags(draw: st.DrawFn, min_size: int = 1) -> Graph:
    """Random DAGs: task i may wait only for tasks j < i (by data or control)."""
    size = draw(st.integers(min_value=min_size, max_value=MAX_TASKS))
    names = [f"t{i}" for i in range(size)]
    graph: Graph = {}
    for i, name in enumerate(names):
        ups = draw(st.sets(st.sampled_from(names[:i]), max_size=4)) if i else set()
        data = draw(st.sets(st.sampled_from(sorted(ups)), max_size=len(ups))) if ups else set()
        graph[name] = (frozenset(data), frozenset(ups - data))
    return graph


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    """Random directed graphs, cycles (self-loops included) allowed."""
    size = draw(st.integers(min_value=1, max_value=10))
    names = [f"t{i}" for i in range(size)]
    graph: Graph = {}
    for name in names:
        ups = draw(st.sets(st.sampled_from(names), max_size=3))
        control = draw(st.sets(st.sampled_from(sorted(ups)), max_size=len(ups))) if ups else set()
        graph[name] = (frozenset(ups - control), frozenset(control))
    return graph


def build(graph: Graph, order: Iterable[str] | None = None) -> list[Task[..., Any]]:
    """Fresh task objects for ``graph``, declared in ``order``."""
    return [
        synthetic_task(name, sorted(graph[name][0]), sorted(graph[name][1]))
        for name in (order if order is not None else graph)
    ]


def edges_of(graph: Graph) -> set[tuple[str, str]]:
    return {(up, name) for name, (data, control) in graph.items() for up in data | control}


def reachable(graph: Graph) -> dict[str, set[str]]:
    """For every task, every task downstream of it (transitively)."""
    down: dict[str, set[str]] = {name: set() for name in graph}
    for up, name in edges_of(graph):
        down[up].add(name)
    closure: dict[str, set[str]] = {}
    for start in graph:
        seen, stack = set(), [start]
        while stack:
            for nxt in down[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        closure[start] = seen
    return closure


def has_cycle(graph: Graph) -> bool:
    return any(name in downstream for name, downstream in reachable(graph).items())


@settings(max_examples=60, deadline=None)
@given(dags())
def test_the_order_respects_every_edge(graph: Graph) -> None:
    """Every upstream comes before its downstream, and every task appears once."""
    plan = plan_pipeline("p", build(graph))
    position = {name: i for i, name in enumerate(plan.order)}
    assert sorted(plan.order) == sorted(graph)
    for up, down in edges_of(graph):
        assert position[up] < position[down]


@settings(max_examples=60, deadline=None)
@given(dags())
def test_each_level_is_an_antichain_at_its_longest_path(graph: Graph) -> None:
    """No task of a level reaches another of the same level; each sits right above an upstream."""
    plan = plan_pipeline("p", build(graph))
    downstream = reachable(graph)
    for level in plan.levels:
        assert list(level) == sorted(level)
        for name in level:
            assert not downstream[name] & set(level)
    level_of = {name: i for i, level in enumerate(plan.levels) for name in level}
    for name, (data, control) in graph.items():
        ups = data | control
        assert level_of[name] == (max(level_of[u] for u in ups) + 1 if ups else 0)
    assert [n for level in plan.levels for n in level] == list(plan.order)


@settings(max_examples=50, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_the_hash_ignores_declaration_order(graph: Graph, rng: Any) -> None:
    """Fresh tasks declared in another order plan to the same hash, order and levels."""
    shuffled = list(graph)
    rng.shuffle(shuffled)
    first, second = plan_pipeline("p", build(graph)), plan_pipeline("q", build(graph, shuffled))
    assert first.hash == second.hash
    assert (first.order, first.levels, first.edges) == (second.order, second.levels, second.edges)


@settings(max_examples=50, deadline=None)
@given(dags(min_size=2), st.data())
def test_the_hash_changes_under_any_edge_or_task_change(graph: Graph, data: st.DataObject) -> None:
    """Adding, removing or retyping an edge, or changing a task, gives another hash."""
    base = plan_pipeline("p", build(graph)).hash
    names = list(graph)
    variants: list[Graph] = []
    present = sorted(edges_of(graph))
    if present:
        up, down = data.draw(st.sampled_from(present))
        ups_data, ups_control = graph[down]
        removed = dict(graph)
        removed[down] = (ups_data - {up}, ups_control - {up})
        variants.append(removed)
        flipped = dict(graph)
        if up in ups_data:
            flipped[down] = (ups_data - {up}, ups_control | {up})
        else:
            flipped[down] = (ups_data | {up}, ups_control - {up})
        variants.append(flipped)
    absent = [
        (names[i], names[j])
        for j in range(len(names))
        for i in range(j)
        if (names[i], names[j]) not in edges_of(graph)
    ]
    if absent:
        up, down = data.draw(st.sampled_from(absent))
        added = dict(graph)
        added[down] = (graph[down][0], graph[down][1] | {up})
        variants.append(added)
    extra = dict(graph)
    extra["extra"] = (frozenset(), frozenset())
    variants.append(extra)
    for variant in variants:
        assert plan_pipeline("p", build(variant)).hash != base
    changed = build(graph)
    target = data.draw(st.sampled_from(names))
    index = names.index(target)
    data_ups, control_ups = graph[target]
    changed[index] = synthetic_task(target, sorted(data_ups), sorted(control_ups), max_retries=9)
    assert plan_pipeline("p", changed).hash != base


@settings(max_examples=120, deadline=None)
@given(graphs())
def test_cycles_are_always_reported_with_a_real_cycle(graph: Graph) -> None:
    """A graph with a cycle fails with one of its cycles; a graph without plans."""
    try:
        plan_pipeline("p", build(graph))
    except DependencyCycleError as error:
        cycle = error.cycle
        assert has_cycle(graph)
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1
        edges = edges_of(graph)
        assert all((a, b) in edges for a, b in itertools.pairwise(cycle))
    else:
        assert not has_cycle(graph)
