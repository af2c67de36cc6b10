"""``relay plan``: the bundle's pipelines (and referenced ones) as a table, Mermaid or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from core.errors import ConfigurationError, UnknownPipelineError
from core.registry import PipelineRegistry
from functions.bundle import PIPELINE_MODULES
from functions.pipelines import etl
from tooling.cli import main

CYCLIC = """
from core.tasks import Pipeline, task


@task(dependencies=["b"])
def a() -> int:
    return 1


@task
def b(a: int) -> int:
    return a


pipeline = Pipeline("loop", tasks=[a, b])
"""

MISTYPED = """
from core.tasks import Pipeline, task


@task
def words() -> list[str]:
    return ["a"]


@task
def total(words: list[int]) -> int:
    return sum(words)


pipeline = Pipeline("mistyped", tasks=[total, words])
"""


def relay(*args: str) -> Result:
    """Invoke the CLI in this process, as the console script would."""
    return CliRunner().invoke(main, list(args))


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed width, so the table does not wrap by the test runner's terminal."""
    monkeypatch.setenv("COLUMNS", "160")


def test_plan_json_prints_order_levels_edges_and_schemas() -> None:
    """``relay plan etl --json`` is the plan's JSON: at least name, hash, order, levels."""
    result = relay("plan", "etl", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["name"] == "etl"
    assert document["hash"] == etl.pipeline.plan().hash
    assert document["order"] == ["extract", "audit", "transform", "load"]
    assert document["levels"] == [["extract"], ["audit", "transform"], ["load"]]
    assert {"from": "audit", "to": "load", "parameter": None, "kind": "control"} in document[
        "edges"
    ]
    load = next(t for t in document["tasks"] if t["name"] == "load")
    assert load["inputs"] == {"transform": "transform"}
    assert load["output_schema"]["title"] == "RegionTotals"
    assert document["input_schema"]["properties"]["row_count"]["default"] == 200


def test_plan_prints_a_table_and_a_mermaid_diagram() -> None:
    """Without --json: every task with its level and types, then a Mermaid flowchart."""
    result = relay("plan", "etl")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"hash {etl.pipeline.plan().hash}" in out
    for name in ("extract", "audit", "transform", "load"):
        assert name in out
    assert "list[CleanSale]" in out and "fail_safe" in out
    assert "input: batch_size: int = 50, eur_per_unit: dict[str, float] | None = None," in out
    assert 't0 -->|"list[list[Sale]]"| t2' in out  # extract streams batches
    assert "```mermaid\nflowchart TD" in out
    assert 't2 -->|"list[CleanSale]"| t3' in out


def test_plan_of_an_unknown_pipeline_exits_2_listing_the_known_ones() -> None:
    """A usage error names what the bundle has."""
    result = relay("plan", "nope")

    assert result.exit_code == 2
    assert "unknown pipeline 'nope'; this bundle has: etl" in result.stderr


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (CYCLIC, "pipeline 'loop' has a dependency cycle: a -> b -> a"),
        (MISTYPED, "task 'words' returns list[str], which cannot feed parameter 'words'"),
    ],
)
def test_an_invalid_pipeline_file_exits_1_naming_the_problem(
    tmp_path: Path, source: str, message: str
) -> None:
    """``relay plan path.py:pipeline`` validates a pipeline outside the bundle (a CI check)."""
    path = tmp_path / "bad_pipeline.py"
    path.write_text(source)

    result = relay("plan", f"{path}:pipeline")

    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())


def test_a_reference_that_is_not_a_pipeline_exits_2(tmp_path: Path) -> None:
    """The reference must name a Pipeline object."""
    (tmp_path / "nothing.py").write_text("pipeline = 3\n")

    result = relay("plan", f"{tmp_path / 'nothing.py'}:pipeline")

    assert result.exit_code == 2
    assert "must name a Pipeline" in result.stderr


def test_the_pipeline_registry_imports_bundle_pipelines_on_first_use() -> None:
    """Names map to references, like sagas; a wrong name or reference is explained."""
    registry = PipelineRegistry(PIPELINE_MODULES)
    assert registry.names() == ["etl"] and "etl" in registry
    assert registry.get("etl") is etl.pipeline
    with pytest.raises(UnknownPipelineError, match="this bundle has: etl"):
        registry.get("other")
    renamed = PipelineRegistry({"other": "functions.pipelines.etl:pipeline"})
    with pytest.raises(ConfigurationError, match="defines pipeline 'etl', but it is registered"):
        renamed.get("other")
    with pytest.raises(ConfigurationError, match="pipeline 'x' cannot be loaded"):
        PipelineRegistry({"x": "functions.pipelines.no_such_module:pipeline"}).get("x")
