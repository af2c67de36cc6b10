"""Explicit success and failure values for step code and engine internals.

A ``Result`` lets a caller see in the signature that an operation can fail and handle both
outcomes by matching, instead of using exceptions as control flow across the engine.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, NoReturn, ParamSpec, TypeAlias, TypeVar, overload

from core.errors import EngineError

__all__ = [
    "Failure",
    "Result",
    "Success",
    "UnwrapError",
    "async_safe",
    "collect",
    "from_awaitable",
    "from_callable",
    "safe",
]

# Covariant so that a ``Success[bool]`` is usable where a ``Success[int]`` is expected; sound
# because both classes are frozen and never accept their own parameter as input.
T_co = TypeVar("T_co", covariant=True)
E_co = TypeVar("E_co", covariant=True)
T = TypeVar("T")
E = TypeVar("E")
U = TypeVar("U")
F = TypeVar("F")
P = ParamSpec("P")

# The exception types the helpers catch unless told otherwise. ``Exception`` rather than
# ``BaseException`` so that ``KeyboardInterrupt``, ``SystemExit`` and ``asyncio.CancelledError``
# still unwind the stack instead of turning into ordinary failures.
_DEFAULT_EXCEPTIONS: tuple[type[Exception], ...] = (Exception,)


class UnwrapError(EngineError):
    """Raised when a ``Result`` is unwrapped on the side it does not hold.

    ``result`` is the ``Success`` or ``Failure`` that was unwrapped and ``operation`` the
    method called; when a ``Failure`` holds an exception it is also the ``__cause__``.
    """

    def __init__(self, *, result: Success[object] | Failure[object], operation: str) -> None:
        self.result = result
        self.operation = operation
        if isinstance(result, Failure):
            hint = "match on the result or use unwrap_or()/unwrap_or_else() to handle the failure"
        else:
            hint = "check is_failure() before calling it, or match on the result"
        super().__init__(f"{operation}() called on {result!r}; {hint}")


@dataclass(frozen=True, slots=True)
class Success(Generic[T_co]):
    """The outcome of an operation that worked, holding its ``value``.

    Methods that act on failures return ``self`` unchanged, so a chain of calls only does
    work on the side the result is on.
    """

    value: T_co

    def is_success(self) -> Literal[True]:
        """Tell whether this result is a success; always true here."""
        return True

    def is_failure(self) -> Literal[False]:
        """Tell whether this result is a failure; always false here."""
        return False

    def map(self, f: Callable[[T_co], U]) -> Success[U]:
        """Transform the value, keeping the result a success.

        Args:
            f: Function applied to the value.

        Returns:
            A success holding ``f(value)``.
        """
        return Success(f(self.value))

    def bind(self, f: Callable[[T_co], Result[U, F]]) -> Result[U, F]:
        """Chain an operation that can itself fail.

        Args:
            f: Function applied to the value, returning the next result.

        Returns:
            Whatever ``f(value)`` returns.
        """
        return f(self.value)

    def map_error(self, f: Callable[[Any], object]) -> Success[T_co]:
        """Leave a success untouched; there is no error to transform.

        Args:
            f: Ignored; present so the call type-checks on either side of a ``Result``.

        Returns:
            This success.
        """
        return self

    def unwrap(self) -> T_co:
        """Return the value.

        Returns:
            The value.
        """
        return self.value

    def unwrap_or(self, default: object) -> T_co:
        """Return the value, ignoring the default meant for failures.

        Args:
            default: Ignored.

        Returns:
            The value.
        """
        return self.value

    def unwrap_error(self) -> NoReturn:
        """Refuse to return an error, because a success has none.

        Raises:
            UnwrapError: Always.
        """
        raise UnwrapError(result=self, operation="unwrap_error")

    def unwrap_or_else(self, f: Callable[[Any], object]) -> T_co:
        """Return the value without calling the failure handler.

        Args:
            f: Ignored.

        Returns:
            The value.
        """
        return self.value

    def or_else(self, f: Callable[[Any], object]) -> Success[T_co]:
        """Leave a success untouched; there is nothing to recover from.

        Args:
            f: Ignored.

        Returns:
            This success.
        """
        return self


@dataclass(frozen=True, slots=True)
class Failure(Generic[E_co]):
    """The outcome of an operation that failed, holding its ``error``.

    Methods that act on values return ``self`` unchanged, so a chain of calls stops doing
    work at the first failure and carries it to the end.
    """

    error: E_co

    def is_success(self) -> Literal[False]:
        """Tell whether this result is a success; always false here."""
        return False

    def is_failure(self) -> Literal[True]:
        """Tell whether this result is a failure; always true here."""
        return True

    def map(self, f: Callable[[Any], object]) -> Failure[E_co]:
        """Leave a failure untouched; there is no value to transform.

        Args:
            f: Ignored; present so the call type-checks on either side of a ``Result``.

        Returns:
            This failure.
        """
        return self

    def bind(self, f: Callable[[Any], object]) -> Failure[E_co]:
        """Skip the next operation, because this one already failed.

        Args:
            f: Ignored.

        Returns:
            This failure.
        """
        return self

    def map_error(self, f: Callable[[E_co], F]) -> Failure[F]:
        """Transform the error, keeping the result a failure.

        Args:
            f: Function applied to the error.

        Returns:
            A failure holding ``f(error)``.
        """
        return Failure(f(self.error))

    def unwrap(self) -> NoReturn:
        """Refuse to return a value, because a failure has none.

        Raises:
            UnwrapError: Always; chained from the error when the error is an exception.
        """
        if isinstance(self.error, BaseException):
            raise UnwrapError(result=self, operation="unwrap") from self.error
        raise UnwrapError(result=self, operation="unwrap")

    def unwrap_or(self, default: U) -> U:
        """Return the default in place of the missing value.

        Args:
            default: Value to use instead.

        Returns:
            The default.
        """
        return default

    def unwrap_error(self) -> E_co:
        """Return the error.

        Returns:
            The error.
        """
        return self.error

    def unwrap_or_else(self, f: Callable[[E_co], U]) -> U:
        """Compute a replacement value from the error.

        Args:
            f: Function applied to the error.

        Returns:
            ``f(error)``.
        """
        return f(self.error)

    def or_else(self, f: Callable[[E_co], Result[U, F]]) -> Result[U, F]:
        """Try to recover from the failure with an operation that can itself fail.

        Args:
            f: Function applied to the error, returning the replacement result.

        Returns:
            Whatever ``f(error)`` returns.
        """
        return f(self.error)


Result: TypeAlias = Success[T] | Failure[E]
"""Either a :class:`Success` holding a ``T`` or a :class:`Failure` holding an ``E``."""


def from_callable(
    fn: Callable[..., T],
    /,
    *args: Any,
    exceptions: tuple[type[Exception], ...] = _DEFAULT_EXCEPTIONS,
    **kwargs: Any,
) -> Result[T, Exception]:
    """Call a function and capture its outcome as a result.

    The arguments are typed ``Any`` because PEP 612 forbids a keyword-only parameter between
    ``*args: P.args`` and ``**kwargs: P.kwargs``; call ``safe(fn)(...)`` instead when the
    arguments should be checked against ``fn``'s signature.

    Args:
        fn: Function to call.
        *args: Positional arguments for ``fn``.
        exceptions: Exception types to capture as failures; any other exception propagates.
        **kwargs: Keyword arguments for ``fn``.

    Returns:
        A success holding the return value, or a failure holding the caught exception.
    """
    try:
        return Success(fn(*args, **kwargs))
    except exceptions as exc:
        return Failure(exc)


async def from_awaitable(
    awaitable: Awaitable[T],
    /,
    *,
    exceptions: tuple[type[Exception], ...] = _DEFAULT_EXCEPTIONS,
) -> Result[T, Exception]:
    """Await an awaitable and capture its outcome as a result.

    Args:
        awaitable: Awaitable to await.
        exceptions: Exception types to capture as failures; any other exception propagates.

    Returns:
        A success holding the awaited value, or a failure holding the caught exception.
    """
    try:
        return Success(await awaitable)
    except exceptions as exc:
        return Failure(exc)


@overload
def safe(fn: Callable[P, T], /) -> Callable[P, Result[T, Exception]]: ...


@overload
def safe(
    *, exceptions: tuple[type[Exception], ...] = ...
) -> Callable[[Callable[P, T]], Callable[P, Result[T, Exception]]]: ...


def safe(
    fn: Callable[P, T] | None = None,
    /,
    *,
    exceptions: tuple[type[Exception], ...] = _DEFAULT_EXCEPTIONS,
) -> (
    Callable[P, Result[T, Exception]]
    | Callable[[Callable[P, T]], Callable[P, Result[T, Exception]]]
):
    """Turn a function that raises into one that returns a result.

    Use as ``@safe`` to capture every ``Exception``, or as ``@safe(exceptions=(...))`` to
    capture only those types and let the rest propagate.

    Args:
        fn: Function to wrap, when used without arguments.
        exceptions: Exception types to capture as failures.

    Returns:
        The wrapped function, or a decorator producing it when ``fn`` is not given.
    """

    def decorate(func: Callable[P, T]) -> Callable[P, Result[T, Exception]]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Result[T, Exception]:
            return from_callable(func, *args, exceptions=exceptions, **kwargs)

        return wrapper

    return decorate if fn is None else decorate(fn)


@overload
def async_safe(
    fn: Callable[P, Awaitable[T]], /
) -> Callable[P, Coroutine[Any, Any, Result[T, Exception]]]: ...


@overload
def async_safe(
    *, exceptions: tuple[type[Exception], ...] = ...
) -> Callable[
    [Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, Result[T, Exception]]]
]: ...


def async_safe(
    fn: Callable[P, Awaitable[T]] | None = None,
    /,
    *,
    exceptions: tuple[type[Exception], ...] = _DEFAULT_EXCEPTIONS,
) -> (
    Callable[P, Coroutine[Any, Any, Result[T, Exception]]]
    | Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, Result[T, Exception]]]]
):
    """Turn an async function that raises into one that returns a result.

    Use as ``@async_safe`` or ``@async_safe(exceptions=(...))``, like :func:`safe`. An
    exception raised before the first ``await`` is captured as well.

    Args:
        fn: Async function to wrap, when used without arguments.
        exceptions: Exception types to capture as failures.

    Returns:
        The wrapped coroutine function, or a decorator producing it when ``fn`` is not given.
    """

    def decorate(
        func: Callable[P, Awaitable[T]],
    ) -> Callable[P, Coroutine[Any, Any, Result[T, Exception]]]:
        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Result[T, Exception]:
            try:
                # Calling ``func`` sits inside the ``try`` because a plain function returning
                # an awaitable may raise before there is anything to await.
                awaitable = func(*args, **kwargs)
            except exceptions as exc:
                return Failure(exc)
            return await from_awaitable(awaitable, exceptions=exceptions)

        return wrapper

    return decorate if fn is None else decorate(fn)


def collect(results: Iterable[Result[T, E]]) -> Result[list[T], E]:
    """Combine results into one, failing on the first failure.

    Iteration stops at the first failure, so a lazy iterable is not consumed past it.

    Args:
        results: Results to combine.

    Returns:
        A success holding every value in order, or the first failure.
    """
    values: list[T] = []
    for result in results:
        if isinstance(result, Failure):
            return result
        values.append(result.value)
    return Success(values)
