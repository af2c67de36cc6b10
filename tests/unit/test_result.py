"""Tests for core.result: the Success/Failure result type and its helpers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import EngineError
from core.result import (
    Failure,
    Result,
    Success,
    UnwrapError,
    async_safe,
    collect,
    from_awaitable,
    from_callable,
    safe,
)

# Arbitrary results over ints and strings, on either side, for the law tests.
values = st.one_of(st.integers(), st.text())
results = st.one_of(st.builds(Success, values), st.builds(Failure, values))

# A small family of Kleisli arrows (value -> Result) that can succeed or fail, so the bind
# laws are exercised through both branches.
KLEISLI: list[Callable[[object], Result[object, object]]] = [
    Success,
    Failure,
    lambda x: Success(repr(x)),
    lambda x: Success(len(x)) if isinstance(x, str) else Failure(x),
    lambda x: Success(x * 2) if isinstance(x, int) and x % 2 == 0 else Failure(f"odd:{x!r}"),
]
arrows = st.sampled_from(KLEISLI)
plain_functions = st.sampled_from([repr, str, lambda x: (x, x), lambda x: [x]])


def _raise_value_error() -> int:
    raise ValueError("boom")


def _raise_key_error() -> int:
    raise KeyError("missing")


# --- monad laws ---------------------------------------------------------------------------


@given(value=values, f=arrows)
def test_bind_left_identity_applies_function_to_wrapped_value(value, f):
    """Binding f to Success(x) gives the same result as calling f(x)."""
    assert Success(value).bind(f) == f(value)


@given(result=results)
def test_bind_right_identity_with_success_constructor_returns_same_result(result):
    """Binding the Success constructor leaves any result unchanged."""
    assert result.bind(Success) == result


@given(result=results, f=arrows, g=arrows)
def test_bind_is_associative(result, f, g):
    """Binding f then g equals binding the composite x -> f(x).bind(g)."""
    assert result.bind(f).bind(g) == result.bind(lambda x: f(x).bind(g))


# --- functor laws -------------------------------------------------------------------------


@given(result=results)
def test_map_with_identity_returns_same_result(result):
    """Mapping the identity function leaves any result unchanged."""
    assert result.map(lambda x: x) == result


@given(result=results, f=plain_functions, g=plain_functions)
def test_map_preserves_composition(result, f, g):
    """Mapping f then g equals mapping their composition."""
    assert result.map(f).map(g) == result.map(lambda x: g(f(x)))


@given(value=values)
def test_map_on_failure_does_not_call_function(value):
    """Mapping over a Failure never calls the function and returns the same failure."""
    failure = Failure(value)

    def explode(_: object) -> object:
        raise AssertionError("map must not call f on a Failure")

    assert failure.map(explode) is failure
    assert failure.bind(explode) is failure


# --- map_error / or_else ------------------------------------------------------------------


@given(value=values)
def test_map_error_leaves_success_untouched(value):
    """map_error on a Success returns the same success without calling the function."""
    success = Success(value)

    def explode(_: object) -> object:
        raise AssertionError("map_error must not call f on a Success")

    assert success.map_error(explode) is success


def test_map_error_transforms_failure_error():
    """map_error on a Failure applies the function to the error."""
    assert Failure("bad").map_error(str.upper) == Failure("BAD")


def test_or_else_recovers_failure_and_skips_success():
    """or_else replaces a failure with the handler's result and leaves a success alone."""
    assert Failure("bad").or_else(lambda e: Success(len(e))) == Success(3)
    assert Failure("bad").or_else(lambda e: Failure(e + "!")) == Failure("bad!")
    success = Success(1)
    assert success.or_else(lambda e: Success(0)) is success


# --- predicates and accessors -------------------------------------------------------------


def test_predicates_report_which_side_the_result_is_on():
    """is_success and is_failure tell a Success from a Failure."""
    assert Success(1).is_success() and not Success(1).is_failure()
    assert Failure(1).is_failure() and not Failure(1).is_success()


def test_value_and_error_are_read_only():
    """The held value and error cannot be reassigned, because results are frozen."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Success(1).value = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Failure(1).error = 2  # type: ignore[misc]


def test_results_are_hashable_and_compare_by_content():
    """Equal results hash equally, and a Success never equals a Failure with the same payload."""
    assert {Success(1), Success(1), Failure(1)} == {Success(1), Failure(1)}
    assert Success(1) != Failure(1)


# --- unwrapping ---------------------------------------------------------------------------


def test_unwrap_returns_success_value():
    """unwrap on a Success returns its value."""
    assert Success(42).unwrap() == 42


def test_unwrap_on_failure_raises_unwrap_error_carrying_the_result():
    """unwrap on a Failure with a plain error raises UnwrapError holding that failure."""
    failure = Failure("card declined")
    with pytest.raises(UnwrapError) as info:
        failure.unwrap()
    assert info.value.result is failure
    assert info.value.operation == "unwrap"
    assert "card declined" in str(info.value)
    assert info.value.__cause__ is None


def test_unwrap_on_failure_chains_exception_error():
    """unwrap on a Failure holding an exception raises UnwrapError caused by that exception."""
    cause = ValueError("boom")
    with pytest.raises(UnwrapError) as info:
        Failure(cause).unwrap()
    assert info.value.__cause__ is cause


def test_unwrap_error_is_an_engine_error():
    """UnwrapError derives from EngineError so engine-wide handlers catch it."""
    assert issubclass(UnwrapError, EngineError)
    assert UnwrapError.retryable is False


def test_unwrap_or_returns_value_or_default():
    """unwrap_or returns a success's value and a failure's default."""
    assert Success(1).unwrap_or(0) == 1
    assert Failure("bad").unwrap_or(0) == 0


def test_unwrap_or_else_computes_default_from_error_only_on_failure():
    """unwrap_or_else calls the handler with the error on a Failure and never on a Success."""
    assert Failure("bad").unwrap_or_else(len) == 3

    def explode(_: object) -> int:
        raise AssertionError("unwrap_or_else must not call f on a Success")

    assert Success(1).unwrap_or_else(explode) == 1


def test_unwrap_error_returns_failure_error():
    """unwrap_error on a Failure returns its error."""
    assert Failure("bad").unwrap_error() == "bad"


def test_unwrap_error_on_success_raises_unwrap_error():
    """unwrap_error on a Success raises UnwrapError holding that success."""
    success = Success(1)
    with pytest.raises(UnwrapError) as info:
        success.unwrap_error()
    assert info.value.result is success
    assert info.value.operation == "unwrap_error"
    assert info.value.__cause__ is None


# --- from_callable and safe ---------------------------------------------------------------


def test_from_callable_wraps_return_value_in_success():
    """from_callable passes the arguments through and returns Success of the return value."""
    assert from_callable(int, "ff", base=16) == Success(255)


def test_from_callable_captures_raised_exception_as_failure():
    """from_callable returns Failure holding the exception the function raised."""
    result = from_callable(_raise_value_error)
    assert isinstance(result, Failure)
    assert isinstance(result.error, ValueError)
    assert str(result.error) == "boom"


def test_from_callable_with_restricted_exceptions_captures_listed_type():
    """from_callable captures an exception whose type is in the exceptions tuple."""
    result = from_callable(_raise_value_error, exceptions=(ValueError,))
    assert isinstance(result, Failure)
    assert isinstance(result.error, ValueError)


def test_from_callable_with_restricted_exceptions_propagates_other_types():
    """from_callable lets an exception outside the exceptions tuple propagate."""
    with pytest.raises(KeyError):
        from_callable(_raise_key_error, exceptions=(ValueError,))


def test_from_callable_propagates_base_exceptions():
    """from_callable does not capture BaseExceptions such as KeyboardInterrupt."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        from_callable(interrupt)


def test_safe_decorated_function_returns_success_or_failure():
    """A @safe function returns Success on return and Failure on raise."""

    @safe
    def divide(a: int, b: int) -> float:
        return a / b

    assert divide(6, b=3) == Success(2.0)
    result = divide(1, 0)
    assert isinstance(result, Failure)
    assert isinstance(result.error, ZeroDivisionError)


def test_safe_preserves_wrapped_function_metadata():
    """@safe keeps the wrapped function's name and docstring."""

    @safe
    def documented() -> int:
        """Say hello."""
        return 1

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Say hello."


def test_safe_with_restricted_exceptions_captures_only_listed_types():
    """@safe(exceptions=...) captures listed types and lets others propagate."""

    @safe(exceptions=(ValueError,))
    def parse(text: str) -> int:
        if text == "missing":
            raise KeyError(text)
        return int(text)

    assert parse("7") == Success(7)
    assert isinstance(parse("x").unwrap_error(), ValueError)
    with pytest.raises(KeyError):
        parse("missing")


# --- async helpers ------------------------------------------------------------------------


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


async def _fail_after_await() -> int:
    await asyncio.sleep(0)
    raise ValueError("late")


def test_from_awaitable_wraps_awaited_value_in_success():
    """from_awaitable returns Success of what the awaitable produces."""
    assert asyncio.run(from_awaitable(_answer())) == Success(42)


def test_from_awaitable_captures_raised_exception_as_failure():
    """from_awaitable returns Failure holding the exception raised while awaiting."""
    result = asyncio.run(from_awaitable(_fail_after_await()))
    assert isinstance(result, Failure)
    assert isinstance(result.error, ValueError)


def test_from_awaitable_with_restricted_exceptions_propagates_other_types():
    """from_awaitable lets an exception outside the exceptions tuple propagate."""
    with pytest.raises(ValueError, match="late"):
        asyncio.run(from_awaitable(_fail_after_await(), exceptions=(KeyError,)))


def test_async_safe_decorated_function_returns_success_or_failure():
    """An @async_safe coroutine function returns Success on return and Failure on raise."""
    assert asyncio.run(async_safe(_answer)()) == Success(42)
    result = asyncio.run(async_safe(_fail_after_await)())
    assert isinstance(result, Failure)
    assert isinstance(result.error, ValueError)


def test_async_safe_captures_exception_raised_before_returning_awaitable():
    """@async_safe captures an exception a plain function raises before producing an awaitable."""

    def eager(flag: bool) -> asyncio.Future[int]:
        if flag:
            raise ValueError("eager")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(5)
        return future

    wrapped = async_safe(eager)

    async def run_both() -> tuple[Result[int, Exception], Result[int, Exception]]:
        return await wrapped(False), await wrapped(True)

    ok, failed = asyncio.run(run_both())
    assert ok == Success(5)
    assert isinstance(failed.unwrap_error(), ValueError)


def test_async_safe_with_restricted_exceptions_propagates_other_types():
    """@async_safe(exceptions=...) lets an exception outside the tuple propagate."""
    wrapped = async_safe(exceptions=(KeyError,))(_fail_after_await)
    with pytest.raises(ValueError, match="late"):
        asyncio.run(wrapped())


# --- collect ------------------------------------------------------------------------------


@given(items=st.lists(values))
def test_collect_of_successes_returns_success_of_all_values_in_order(items):
    """collect turns a sequence of successes into a success of the list of their values."""
    assert collect(Success(item) for item in items) == Success(items)


def test_collect_of_empty_input_returns_success_of_empty_list():
    """collect of no results is a success holding an empty list."""
    assert collect([]) == Success([])


def test_collect_returns_first_failure_and_stops_consuming():
    """collect returns the first failure and does not pull further results."""
    pulled: list[int] = []

    def produce() -> Iterator[Result[int, str]]:
        pending: list[Result[int, str]] = [Success(1), Failure("first"), Failure("second")]
        for index, result in enumerate(pending):
            pulled.append(index)
            yield result

    assert collect(produce()) == Failure("first")
    assert pulled == [0, 1]


# --- pattern matching ---------------------------------------------------------------------


def _describe(result: Result[int, str]) -> str:
    match result:
        case Success(0):
            return "zero"
        case Success(value):
            return f"value {value}"
        case Failure(error):
            return f"error {error}"


def test_results_support_positional_pattern_matching():
    """match/case destructures Success and Failure positionally, including literal patterns."""
    assert _describe(Success(0)) == "zero"
    assert _describe(Success(5)) == "value 5"
    assert _describe(Failure("bad")) == "error bad"


def _describe_by_keyword(result: Result[int, str]) -> str:
    match result:
        case Success(value=value):
            return f"value {value}"
        case Failure(error=error):
            return f"error {error}"


def test_results_support_keyword_pattern_matching():
    """match/case destructures Success by value= and Failure by error= keywords."""
    assert _describe_by_keyword(Success(5)) == "value 5"
    assert _describe_by_keyword(Failure("bad")) == "error bad"
