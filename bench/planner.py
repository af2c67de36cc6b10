"""Planner and task-registry speed, against same-run baselines (issue 11's bench).

What it measures, all in one process so the ratios compare like with like:

1. ``plan``: ``plan_pipeline`` on a seeded random 10,000-task DAG (data edges by parameter
   name, some control edges, every data edge type-checked, the structure hashed), against
   the standard library's ``graphlib.TopologicalSorter`` ordering the same edges (which
   checks nothing). Declaring the tasks (``@task``: signatures and type hints) is timed
   apart.
2. ``lookups``: ``TaskRegistry.get`` by name per second, against a bare ``dict`` lookup.
3. ``matches``: wildcard tag matches (``tag_matches``, ``*`` and ``**``) per second,
   against ``fnmatch.fnmatchcase`` on the same pairs and the event topics' own matcher
   (``core.domain.triggers.topic_matches``); and ``TaskRegistry.find`` on a wildcard over
   the 10,000 tasks' tags.

dp-poc's document reports ~1M registry lookups/s and ~50K pattern matches/s for itself on
an Apple M1 (Python 3.12); those are printed beside ours, from another machine.

Run: ``python -m bench.planner [--tasks 10000] [--json]``
"""

from __future__ import annotations

import argparse
import fnmatch
import graphlib
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from core.domain.triggers import topic_matches
from core.tasks import Task, TaskRegistry, plan_pipeline, tag_matches
from tests.support.pipelines import synthetic_task

DP_POC_LOOKUPS_PER_SECOND = 1_000_000
DP_POC_MATCHES_PER_SECOND = 50_000
AREAS = ("etl", "ml", "reports", "billing", "ops")
STAGES = ("extract", "transform", "load", "check", "publish")


def random_dag(size: int, seed: int) -> list[Task[..., Any]]:
    """``size`` tasks; task i reads up to 3 of the 200 before it and may wait for one more."""
    rng = random.Random(seed)
    tasks: list[Task[..., Any]] = []
    for i in range(size):
        window = range(max(0, i - 200), i)
        ups = rng.sample(window, k=min(len(window), rng.randint(0, 3)))
        control = [f"t{rng.choice(window)}"] if window and rng.random() < 0.2 else []
        data = [f"t{u}" for u in ups]
        control = [c for c in control if c not in data]
        tags = [f"{rng.choice(AREAS)}.{rng.choice(STAGES)}.d{i % 7}"]
        inputs = ["batch_size"] if i % 50 == 0 else []
        tasks.append(synthetic_task(f"t{i}", data, control, inputs=inputs, tags=tags))
    rng.shuffle(tasks)  # declared in any order
    return tasks


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """The fastest of ``repeats`` wall-clock runs, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def rate(count: int, run: Callable[[], object], repeats: int = 3) -> float:
    """Operations per second of ``run``, which performs ``count`` of them."""
    return count / best_of(repeats, run)


def bench_plan(size: int) -> dict[str, Any]:
    started = time.perf_counter()
    tasks = random_dag(size, seed=11)
    declare_seconds = time.perf_counter() - started
    plan_seconds = best_of(3, lambda: plan_pipeline("bench", tasks))
    plan = plan_pipeline("bench", tasks)
    graph = {
        t.name: [*(p.name for p in t.parameters if p.name.startswith("t")), *t.dependencies]
        for t in tasks
    }
    graphlib_seconds = best_of(3, lambda: list(graphlib.TopologicalSorter(graph).static_order()))
    return {
        "tasks": size,
        "edges": len(plan.edges),
        "levels": len(plan.levels),
        "declare_seconds": declare_seconds,
        "plan_seconds": plan_seconds,
        "plan_median_of_3_seconds": statistics.median(
            best_of(1, lambda: plan_pipeline("bench", tasks)) for _ in range(3)
        ),
        "graphlib_seconds": graphlib_seconds,
        "plan_over_graphlib": plan_seconds / graphlib_seconds,
        "_tasks": tasks,
    }


def bench_lookups(registry: TaskRegistry, count: int) -> dict[str, float]:
    names = registry.names()
    rng = random.Random(3)
    keys = [rng.choice(names) for _ in range(count)]
    table = {name: registry.get(name) for name in names}
    get = registry.get

    def through_registry() -> None:
        for key in keys:
            get(key)

    def through_dict() -> None:
        for key in keys:
            table[key]  # the lookup is what is measured

    ours, floor = rate(count, through_registry), rate(count, through_dict)
    return {"per_second": ours, "dict_per_second": floor, "ratio_to_dict": ours / floor}


def bench_matches(registry: TaskRegistry, count: int) -> dict[str, float]:
    rng = random.Random(5)
    patterns = ["etl.*.d1", "*.load.*", "ml.**", "**.d3", "reports.extract.*", "billing.**.d0"]
    tags = registry.tags()
    pairs = [(rng.choice(patterns), rng.choice(tags)) for _ in range(count)]
    globs = [(p.replace("**", "*"), t) for p, t in pairs]  # fnmatch's * spans dots

    def ours() -> None:
        for pattern, tag in pairs:
            tag_matches(pattern, tag)

    def with_fnmatch() -> None:
        for pattern, tag in globs:
            fnmatch.fnmatchcase(tag, pattern)

    def with_topics() -> None:
        for pattern, tag in pairs:
            topic_matches(pattern, tag)

    mine, floor, topics = rate(count, ours), rate(count, with_fnmatch), rate(count, with_topics)
    finds = 200
    find_rate = rate(finds, lambda: [registry.find(rng.choice(patterns)) for _ in range(finds)])
    return {
        "per_second": mine,
        "fnmatch_per_second": floor,
        "ratio_to_fnmatch": mine / floor,
        "topic_matches_per_second": topics,
        "ratio_to_topic_matches": mine / topics,
        "find_over_registry_per_second": find_rate,
        "distinct_tags": len(tags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--matches", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    plan = bench_plan(args.tasks)
    registry = TaskRegistry(plan.pop("_tasks"))
    results = {
        "plan": plan,
        "lookups": bench_lookups(registry, args.lookups),
        "matches": bench_matches(registry, args.matches),
        "dp_poc_reported": {
            "lookups_per_second": DP_POC_LOOKUPS_PER_SECOND,
            "matches_per_second": DP_POC_MATCHES_PER_SECOND,
            "machine": "Apple M1, Python 3.12 (their document; not this machine)",
        },
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    lookups, matches = results["lookups"], results["matches"]
    print(
        f"plan     {plan['tasks']:,} tasks, {plan['edges']:,} edges, {plan['levels']} levels: "
        f"{plan['plan_seconds'] * 1000:.0f} ms (graphlib orders the same edges in "
        f"{plan['graphlib_seconds'] * 1000:.0f} ms: x{plan['plan_over_graphlib']:.1f}, with "
        f"type checks, levels, inputs and the hash); declaring the tasks took "
        f"{plan['declare_seconds'] * 1000:.0f} ms"
    )
    print(
        f"lookups  {lookups['per_second']:,.0f}/s by name (a bare dict: "
        f"{lookups['dict_per_second']:,.0f}/s, ratio {lookups['ratio_to_dict']:.2f}); "
        f"dp-poc reports ~{DP_POC_LOOKUPS_PER_SECOND:,}/s on an M1 "
        f"(x{lookups['per_second'] / DP_POC_LOOKUPS_PER_SECOND:.2f})"
    )
    print(
        f"matches  {matches['per_second']:,.0f}/s wildcard tag matches (fnmatch: "
        f"{matches['fnmatch_per_second']:,.0f}/s, ratio {matches['ratio_to_fnmatch']:.2f}; "
        f"topic matcher: {matches['topic_matches_per_second']:,.0f}/s, ratio "
        f"{matches['ratio_to_topic_matches']:.2f}); dp-poc reports ~"
        f"{DP_POC_MATCHES_PER_SECOND:,}/s on an M1 "
        f"(x{matches['per_second'] / DP_POC_MATCHES_PER_SECOND:.1f})"
    )
    print(
        f"find     {matches['find_over_registry_per_second']:,.0f} wildcard finds/s over "
        f"{plan['tasks']:,} tasks ({matches['distinct_tags']} distinct tags)"
    )


if __name__ == "__main__":
    main()
