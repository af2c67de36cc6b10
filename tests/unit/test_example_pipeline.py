"""The bundle's ETL pipeline: its plan, and its tasks run in plan order by the plan's mapping."""

from __future__ import annotations

from typing import Any

import pytest

from core.tasks import PipelinePlan
from functions.pipelines import etl


def run_in_order(plan: PipelinePlan, raw_input: dict[str, Any]) -> dict[str, Any]:
    """Call each task in ``plan.order`` with what the plan says feeds each parameter."""
    given = plan.input_model.model_validate(raw_input).model_dump(by_alias=True)
    outputs: dict[str, Any] = {}
    for node in plan.nodes.values():
        kwargs = {param: outputs[upstream] for param, upstream in node.data_inputs.items()}
        kwargs.update({param: given[param] for param in node.pipeline_inputs})
        result = node.task(**kwargs)
        outputs[node.name] = list(result) if node.stream_output else result  # the chunks
    return outputs


def test_the_etl_plan_has_three_levels_and_a_control_edge() -> None:
    """extract, then audit beside transform, then load (which waits for audit)."""
    plan = etl.pipeline.plan()
    assert plan.levels == (("extract",), ("audit", "transform"), ("load",))
    assert plan.nodes["load"].control_upstream == ("audit",)
    assert plan.nodes["audit"].fail_safe
    assert [i.name for i in plan.inputs] == ["batch_size", "eur_per_unit", "row_count", "seed"]
    assert not any(i.is_required for i in plan.inputs)


def test_the_plans_data_mapping_runs_the_etl_end_to_end() -> None:
    """Outputs flow by parameter name; the shared ``row_count`` input reaches both tasks."""
    outputs = run_in_order(etl.pipeline.plan(), {"row_count": 120, "seed": 3})
    totals = outputs["load"]
    assert [len(batch) for batch in outputs["extract"]] == [50, 50, 20]
    assert totals.orders == len(outputs["transform"])
    assert totals.rejected == 120 - totals.orders == len(outputs["audit"])
    assert set(totals.totals_eur) <= set(etl.REGIONS)
    assert sum(totals.totals_eur.values()) == pytest.approx(
        sum(s.amount_eur for s in outputs["transform"]), abs=0.05
    )


def test_the_same_input_gives_the_same_result() -> None:
    """The data set is generated from the seed: runs are reproducible."""
    plan = etl.pipeline.plan()
    assert run_in_order(plan, {"seed": 9})["load"] == run_in_order(plan, {"seed": 9})["load"]


def test_extract_streams_batches_that_resume_deterministically() -> None:
    """Batch ``b`` depends only on the seed and ``b``: the resume contract of a stream."""
    whole = list(etl.extract(row_count=120, seed=4, batch_size=50))
    assert list(etl.extract(row_count=120, seed=4, batch_size=50, resume_from=1)) == whole[1:]
    assert [s.order_id for s in whole[2]] == [f"o-4-{i:05d}" for i in range(100, 120)]
    assert etl.extract.cursor_parameter == "resume_from"
