"""``@task``: names, settings, signatures and schemas from type hints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from core.errors import DefinitionError
from core.tasks import task


class Row(BaseModel):
    id: int
    amount: float


@task(tags=["etl.extract"], max_retries=4, timeout=12, max_parallel=8)
def extract(limit: int = 10) -> list[Row]:
    """Read rows.

    More text that is not the description.
    """
    return [Row(id=i, amount=i / 2) for i in range(limit)]


@task(name="summed", dependencies=["extract"], fail_safe=True)
async def total(extract: list[Row], currency: str) -> float:
    return sum(r.amount for r in extract)


@task(stream_output=True)
def batches(size: int) -> Iterator[list[int]]:
    yield list(range(size))


@task(stream_output=True)
async def live(size: int) -> AsyncIterator[str]:
    yield "x" * size


def test_a_task_keeps_its_settings_and_stays_callable() -> None:
    """The decorator records every setting and calling the task calls the function."""
    assert extract.name == "extract"
    assert extract.tags == ("etl.extract",)
    assert (extract.max_retries, extract.timeout_seconds, extract.max_parallel) == (4, 12.0, 8)
    assert not extract.fail_safe and not extract.stream_output and not extract.is_async
    assert extract.description == "Read rows."
    assert extract(limit=2) == [Row(id=0, amount=0.0), Row(id=1, amount=0.5)]


def test_an_async_task_is_marked_async_and_named_by_its_decorator() -> None:
    """``name=`` overrides the function name; async functions are recognised."""
    assert total.name == "summed"
    assert total.is_async and total.fail_safe
    assert total.dependencies == ("extract",)
    assert asyncio.run(total([Row(id=1, amount=2.5)], "EUR")) == 2.5


def test_parameters_come_from_the_signature_with_their_defaults() -> None:
    """Each parameter records its annotation and whether it is optional."""
    limit = extract.parameter("limit")
    assert limit is not None and limit.annotation is int and limit.has_default
    assert limit.default == 10
    assert [p.name for p in total.parameters] == ["extract", "currency"]
    assert total.parameter("missing") is None


def test_input_and_output_schemas_come_from_type_hints() -> None:
    """The JSON schemas are pydantic's, with the real parameter names."""
    schema = total.input_schema()
    assert schema["required"] == ["extract", "currency"]
    assert schema["properties"]["currency"]["type"] == "string"
    assert schema["additionalProperties"] is False
    output = extract.output_schema()
    assert output["type"] == "array"
    assert "Row" in output["$defs"]
    assert total.input_model.model_validate({"extract": [], "currency": "EUR"})


def test_a_streaming_task_outputs_the_list_of_its_chunks() -> None:
    """Downstream receives the chunks collected in order: ``list[<yielded type>]``."""
    assert batches.item_type == list[int]
    assert batches.output_type == list[list[int]]
    assert live.is_async and live.item_type is str
    assert list(batches(3)) == [[0, 1, 2]]


def test_an_unannotated_task_is_unchecked() -> None:
    """Missing hints are ``Any``: such an edge always type-checks."""

    @task
    def loose(x):  # type: ignore[no-untyped-def]
        return x

    assert loose.output_type is Any
    assert loose.parameters[0].annotation is Any


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "task name 'bad name' is invalid"),
        ({"tags": ["etl.*"]}, "wildcards belong in lookups"),
        ({"tags": ["etl..x"]}, "tag 'etl..x'"),
        ({"max_retries": -1}, "max_retries of task 'f' must be an int >= 0"),
        ({"timeout": 0}, r"timeout of task 'f' must be in \(0, 1800\]"),
        ({"timeout": 4000}, "Cloud Tasks' longest dispatch deadline"),
        ({"max_parallel": 0}, "max_parallel of task 'f'"),
        ({"dependencies": ["no good"]}, "'no good' is invalid"),
        ({"stream_output": True}, "is not a generator function"),
    ],
)
def test_bad_settings_are_definition_errors(kwargs: dict[str, object], message: str) -> None:
    """Every setting is checked at decoration, with a message naming the task and the rule."""
    with pytest.raises(DefinitionError, match=message):

        @task(**kwargs)  # type: ignore[call-overload, untyped-decorator]
        def f(x: int) -> int:
            return x


def test_a_generator_without_stream_output_is_refused() -> None:
    """A generator's output cannot be stored as one value: the fix is named."""
    with pytest.raises(DefinitionError, match="declare it with stream_output=True"):

        @task
        def gen() -> Iterator[int]:
            yield 1


def test_parameters_that_cannot_be_passed_by_name_are_refused() -> None:
    """``*args``, ``**kwargs`` and positional-only parameters cannot receive named inputs."""
    with pytest.raises(DefinitionError, match="variadic positional"):

        @task
        def spread(*rows: int) -> int:
            return 0

    with pytest.raises(DefinitionError, match="positional-only"):

        @task
        def positional(x: int, /) -> int:
            return x


def test_hints_that_do_not_resolve_are_a_definition_error() -> None:
    """A forward reference to an unknown type says which task and what to do."""
    with pytest.raises(DefinitionError, match="type hints of task 'later' do not resolve"):

        @task
        def later(x: NotDefinedYet) -> int:  # type: ignore[name-defined]  # noqa: F821
            return 0


def test_a_string_tag_is_one_tag() -> None:
    """``tags="etl"`` is the tag ``etl``, not three letters."""

    @task(tags="etl")
    def one() -> int:
        return 1

    assert one.tags == ("etl",)
