"""Graph algorithms of the planner: parallel levels, topological order, a real cycle.

Pure functions over names: ``upstream[n]`` is the set of tasks ``n`` waits for. Results
depend only on the graph, never on the order it was declared in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleFound(Exception):
    """Raised by :func:`parallel_levels` with a real cycle, first name repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(" -> ".join(cycle))


def parallel_levels(upstream: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Kahn's algorithm in waves: level 0 waits for nothing, level k for levels below k.

    Every task sits at the lowest level its upstreams allow (the longest path to it),
    so the tasks of one level never depend on each other and can run at once. Names are
    sorted within a level, which makes the levels (and their concatenation, a
    topological order) deterministic.

    Args:
        upstream: For every task, the tasks it waits for (all must be keys too).

    Returns:
        The levels, each a sorted list of names.

    Raises:
        CycleFound: some tasks wait for each other; carries one real cycle.
    """
    waiting = {name: len(set(ups)) for name, ups in upstream.items()}
    downstream: dict[str, list[str]] = {name: [] for name in upstream}
    for name, ups in upstream.items():
        for up in set(ups):
            downstream[up].append(name)
    level = sorted(name for name, count in waiting.items() if count == 0)
    levels: list[list[str]] = []
    placed = 0
    while level:
        levels.append(level)
        placed += len(level)
        ready: list[str] = []
        for name in level:
            for down in downstream[name]:
                waiting[down] -= 1
                if waiting[down] == 0:
                    ready.append(down)
        level = sorted(ready)
    if placed < len(upstream):
        stuck = {name for name, count in waiting.items() if count > 0}
        raise CycleFound(find_cycle(stuck, upstream))
    return levels


def find_cycle(stuck: set[str], upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """A cycle among ``stuck``: tasks Kahn's algorithm could not place.

    Every stuck task waits for at least one other stuck task, so walking from the
    smallest stuck name to its smallest stuck upstream, again and again, must revisit
    a task; the walk between the two visits is a cycle. It is returned in the direction
    data flows (each name feeds the next), from its smallest name, repeated last.
    """
    start = min(stuck)
    seen: dict[str, int] = {}
    walk: list[str] = []
    current = start
    while current not in seen:
        seen[current] = len(walk)
        walk.append(current)
        current = min(up for up in upstream[current] if up in stuck)
    loop = walk[seen[current] :]  # each waits for the next: reverse to follow the data
    loop.reverse()
    first = loop.index(min(loop))
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]
