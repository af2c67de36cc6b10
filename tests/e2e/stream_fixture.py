"""A streaming pipeline for the SIGKILL test (tests/e2e/test_stream_kill_local.py).

``ticks`` streams ``count`` chunks. Before yielding chunk ``hold_at`` it waits until the
file ``release`` exists in ``gate_dir``, so the test can kill the worker while chunks
``0..hold_at-1`` are committed and the next one is being produced. Every attempt appends
the index it starts from to ``gate_dir/starts`` and the consumer appends what it
received to ``gate_dir/received`` (one JSON line per call). Each chunk depends only on
its index: the resume contract (core/tasks/task.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from core.tasks import Pipeline, task


def _append(path: Path, value: object) -> None:
    with path.open("a") as out:
        out.write(json.dumps(value) + "\n")


@task(stream_output=True, timeout=5.0, max_retries=3)
def ticks(
    count: int, hold_at: int, gate_dir: str, resume_from: int = 0
) -> Iterator[dict[str, int]]:
    """Yield ``{"index": i, "square": i*i}`` for i in resume_from..count-1."""
    gate = Path(gate_dir)
    _append(gate / "starts", resume_from)
    for index in range(resume_from, count):
        if index == hold_at:
            # A gate, not a timer: the test releases it after the kill.
            while not (gate / "release").exists():
                time.sleep(0.02)
        yield {"index": index, "square": index * index}


@task
def tally(ticks: list[dict[str, int]], gate_dir: str) -> list[int]:
    """The indexes received, in order (also recorded in ``gate_dir/received``)."""
    received = [tick["index"] for tick in ticks]
    _append(Path(gate_dir) / "received", received)
    return received


pipeline = Pipeline("ticker", tasks=[ticks, tally], description="a stream and its consumer")
