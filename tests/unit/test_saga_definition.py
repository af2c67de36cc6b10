"""Saga declarations: what is accepted, what is refused, and how the hash behaves."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import BaseModel

from core import DefinitionError, RetryPolicy, Saga, StepContext
from core.errors import InputValidationError


def noop(ctx: StepContext) -> None:
    return None


def test_steps_default_to_sequential_and_parallel_shares_dependencies() -> None:
    """Without options a step follows the previous one; parallel=True runs beside it."""
    saga = Saga("shape")
    saga.step(noop, name="a")
    saga.step(noop, name="b")
    saga.step(noop, name="c", parallel=True)
    saga.step(noop, name="d", after=["b", "c"])
    assert {n: s.after for n, s in saga.steps.items()} == {
        "a": (),
        "b": ("a",),
        "c": ("a",),
        "d": ("b", "c"),
    }
    assert saga.successors["a"] == ("b", "c")


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda s: (s.step(noop, name="a"), s.step(noop, name="a")),
            "already has a step named 'a'",
        ),
        (lambda s: s.step(noop, name="a", after=["zzz"]), "depends on 'zzz'"),
        (lambda s: s.step(noop, name="bad name"), "step name 'bad name' is invalid"),
        (lambda s: s.step(noop, name="a", timeout_seconds=0), "timeout_seconds"),
        (lambda s: s.step(noop, name="a", timeout_seconds=4000), "timeout_seconds"),
        (lambda s: s.step(noop, name="a", after=[], parallel=True), "either after"),
        (lambda s: s.set_compensation("ghost", None), "no step 'ghost'"),  # type: ignore[arg-type]
    ],
    ids=[
        "duplicate",
        "unknown-dep",
        "bad-name",
        "zero-timeout",
        "huge-timeout",
        "after-and-parallel",
        "compensate-unknown",
    ],
)
def test_invalid_declarations_are_refused(declare: object, message: str) -> None:
    """Each malformed declaration raises DefinitionError naming the problem."""
    saga = Saga("bad")
    with pytest.raises(DefinitionError, match=message):
        declare(saga)  # type: ignore[operator]


def test_a_step_cannot_get_two_compensations() -> None:
    """Declaring a second compensation for a step is an error."""
    saga = Saga("twice")
    handle = saga.step(noop, name="a")
    handle.compensation(noop)
    with pytest.raises(DefinitionError, match="already has a compensation"):
        handle.compensation(noop)


def test_retry_policy_rejects_nonsense() -> None:
    """A retry policy with no attempts or negative delays is refused."""
    with pytest.raises(DefinitionError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(DefinitionError):
        RetryPolicy(initial_delay_seconds=-1)
    with pytest.raises(DefinitionError):
        RetryPolicy(jitter=2)


def test_frozen_saga_refuses_new_steps_and_empty_sagas_cannot_freeze() -> None:
    """Once in use a saga is immutable, and a saga without steps cannot be used."""
    saga = Saga("frozen")
    saga.step(noop, name="a")
    saga.freeze()
    with pytest.raises(DefinitionError, match="already in use"):
        saga.step(noop, name="b")
    with pytest.raises(DefinitionError, match="has no steps"):
        Saga("empty").freeze()


def test_step_handle_stays_callable_for_unit_tests() -> None:
    """The decorated function can still be called directly."""
    saga = Saga("callable")

    @saga.step
    def double(ctx: StepContext) -> int:
        return 2

    assert double(None) == 2  # type: ignore[arg-type]


def test_input_model_validation_reports_each_bad_field() -> None:
    """validate_input lists every bad field with its location."""

    class In(BaseModel):
        a: int
        b: str

    saga = Saga("typed", input_model=In)
    with pytest.raises(InputValidationError) as info:
        saga.validate_input({"a": "x"})
    assert sorted(tuple(e["loc"]) for e in info.value.errors) == [("a",), ("b",)]
    assert saga.validate_input({"a": "3", "b": "ok"}) == {"a": 3, "b": "ok"}


def test_definition_hash_changes_with_code_and_is_stable_across_processes() -> None:
    """The hash reflects step code, and two processes agree on it."""
    program = textwrap.dedent(
        """
        from core import Saga
        s = Saga("h")
        @s.step
        def a(ctx):
            return [x * 2 for x in range(BODY)]
        print(s.definition_hash)
        """
    )

    def run(body: str) -> str:
        code = program.replace("BODY", body)
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert run("3") == run("3")
    assert run("3") != run("4")
