"""Compiling a pipeline onto the saga engine: steps, hash, refusals, the shared namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.domain.saga import Saga
from core.domain.status import StepStatus
from core.errors import DefinitionError
from core.registry import SagaRegistry
from core.tasks import Pipeline, task
from core.tasks.runnable import PipelineSaga, compile_pipeline
from functions.bundle import PIPELINE_MODULES, SAGA_MODULES
from functions.settings import Settings
from functions.wiring import build_registry


@task
def numbers(count: int = 3) -> list[int]:
    return list(range(count))


@task(fail_safe=True)
def maybe_total(numbers: list[int]) -> int:
    return sum(numbers)


@task
def strict_report(maybe_total: int) -> str:
    return str(maybe_total)


@task
def lenient_report(maybe_total: int | None, numbers: list[int]) -> str:
    return f"{maybe_total} of {len(numbers)}"


@task(stream_output=True)
def chunks(count: int = 3) -> Iterator[int]:
    yield from range(count)


def test_each_task_becomes_a_step_after_its_upstreams_with_its_retry_and_timeout() -> None:
    saga = compile_pipeline(Pipeline("lenient", tasks=[numbers, maybe_total, lenient_report]))
    assert isinstance(saga, PipelineSaga) and isinstance(saga, Saga)
    assert list(saga.steps) == ["numbers", "maybe_total", "lenient_report"]
    report = saga.steps["lenient_report"]
    assert set(report.after) == {"maybe_total", "numbers"}
    assert report.compensation is None and not report.compensate_on_failure
    assert report.retry.max_attempts == lenient_report.max_retries + 1
    assert report.timeout_seconds == lenient_report.timeout_seconds
    assert saga.steps["maybe_total"].fail_safe and not report.fail_safe
    assert saga.input_model is not None
    assert saga.validate_input({}) == {"count": 3}


def test_a_parameter_fed_by_a_fail_safe_task_must_accept_none() -> None:
    with pytest.raises(DefinitionError) as raised:
        Pipeline("strict", tasks=[numbers, maybe_total, strict_report]).plan()
    message = str(raised.value)
    assert "'maybe_total'" in message and "'strict_report'" in message
    assert "None" in message


def test_a_pipeline_with_a_streaming_task_compiles_to_one_step() -> None:
    saga = compile_pipeline(Pipeline("streams", tasks=[chunks]))
    assert list(saga.steps) == ["chunks"]
    assert saga.validate_input({}) == {"count": 3}


def test_the_definition_hash_covers_the_structure_and_the_task_code() -> None:
    first = compile_pipeline(Pipeline("lenient", tasks=[numbers, maybe_total, lenient_report]))
    again = compile_pipeline(Pipeline("lenient", tasks=[lenient_report, maybe_total, numbers]))
    assert first.definition_hash == again.definition_hash

    @task(name="lenient_report")
    def changed(maybe_total: int | None, numbers: list[int]) -> str:
        return f"{maybe_total} / {len(numbers)}"  # same signature, other code

    other = compile_pipeline(Pipeline("lenient", tasks=[changed, numbers, maybe_total]))
    assert other.plan.hash == first.plan.hash
    assert other.definition_hash != first.definition_hash


def test_pipelines_and_sagas_share_one_namespace() -> None:
    with pytest.raises(DefinitionError, match=r"'order'.*both a saga and a pipeline"):
        SagaRegistry(dict(SAGA_MODULES), pipelines={"order": PIPELINE_MODULES["etl"]})
    registry = SagaRegistry({"lenient": Saga("lenient")})
    with pytest.raises(DefinitionError, match="share one namespace"):
        registry.register_pipeline(
            Pipeline("lenient", tasks=[numbers, maybe_total, lenient_report])
        )


def test_the_bundle_registry_serves_the_example_pipeline_beside_the_sagas() -> None:
    registry = build_registry(Settings.from_env({}))
    assert "etl" in registry and "order" in registry
    assert registry.pipeline_names() == ["etl"]
    etl = registry.get("etl")
    assert isinstance(etl, PipelineSaga)
    assert registry.restricted_to(["etl"]).names() == ["etl"]
    with pytest.raises(DefinitionError, match="'etl'"):
        build_registry(Settings.from_env({"RELAY_SAGA_MODULES": "etl=functions.sagas.order:saga"}))
    extra = Settings.from_env({"RELAY_PIPELINE_MODULES": "mine=functions.pipelines.etl:pipeline"})
    assert extra.pipeline_modules == {**PIPELINE_MODULES, "mine": PIPELINE_MODULES["etl"]}


def test_a_fail_safe_failure_counts_as_done_for_readiness() -> None:
    from core.domain.records import StepName, StepRecord
    from core.engine import planner

    saga = compile_pipeline(Pipeline("lenient", tasks=[numbers, maybe_total, lenient_report]))
    steps = {
        StepName("numbers"): StepRecord("r", StepName("numbers"), status=StepStatus.SUCCEEDED),
        StepName("maybe_total"): StepRecord("r", StepName("maybe_total"), status=StepStatus.FAILED),
        StepName("lenient_report"): StepRecord("r", StepName("lenient_report")),
    }
    assert planner.is_ready(saga, steps, StepName("lenient_report"))
    not_fail_safe = StepRecord("r", StepName("numbers"), status=StepStatus.FAILED)
    assert not planner.is_done(saga, not_fail_safe)
