"""Which upstream output types can feed which parameters (core/tasks/types.py's table)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict, TypeVar, Union

import pytest
from pydantic import BaseModel

from core.tasks import is_assignable, type_name


class Base(BaseModel):
    x: int = 0


class Child(Base):
    y: int = 0


class Plain:
    pass


class Movie(TypedDict):
    title: str


UserId = NewType("UserId", int)
T = TypeVar("T")
Bounded = TypeVar("Bounded", bound=Base)

FITS = [
    (int, int),
    (int, float),
    (int, complex),
    (float, complex),
    (bool, int),
    (Child, Base),
    (list[int], list[float]),
    (list[int], Sequence[int]),
    (list[int], Iterable[float]),
    (list[Child], Sequence[Base]),
    (list[int], list),
    (list, list[int]),
    (dict[str, int], dict[str, float]),
    (dict[str, int], Mapping[str, float]),
    (dict[str, int], Iterable[str]),
    (int, Optional[int]),  # noqa: UP045 - the spelling under test
    (int, int | None),
    (None, int | None),
    (int | str, int | str | None),
    (Union[int, bool], float),  # noqa: UP007
    (tuple[int, str], tuple[float, str]),
    (tuple[int, int], tuple[float, ...]),
    (tuple[int, ...], tuple[float, ...]),
    (tuple[int, int], Sequence[float]),
    (Literal["a", "b"], str),
    (Literal["a"], Literal["a", "b"]),
    (UserId, int),
    (Annotated[int, "meta"], float),
    (Any, int),
    (int, Any),
    (Plain, object),
    (Movie, Movie),
    (T, int),
    (Bounded, Base),
    (Child, Bounded),
]
DOES_NOT_FIT = [
    (float, int),
    (str, int),
    (Base, Child),
    (Sequence[int], list[int]),
    (list[str], list[int]),
    (list[int], tuple[int, ...]),
    (Optional[int], int),  # noqa: UP045
    (int | None, int),
    (int | str, int),
    (None, int),
    (dict[str, int], dict[int, int]),
    (tuple[int, str], tuple[float, ...]),
    (tuple[int, ...], tuple[int, int]),
    (tuple[int], tuple[int, int]),
    (Literal["a", "c"], Literal["a", "b"]),
    (str, Literal["a"]),
    (int, UserId),
    (Plain, Base),
    (Plain, Bounded),
    (dict[str, Any], Movie),
]


@pytest.mark.parametrize(("source", "target"), FITS, ids=type_name)
def test_these_outputs_fit_these_parameters(source: object, target: object) -> None:
    """Subclasses, the numeric tower, covariant containers and union members fit."""
    assert is_assignable(source, target)


@pytest.mark.parametrize(("source", "target"), DOES_NOT_FIT, ids=type_name)
def test_these_outputs_do_not_fit_these_parameters(source: object, target: object) -> None:
    """Optional into required, base into subclass, wider into narrower: refused."""
    assert not is_assignable(source, target)


def test_unhashable_annotations_are_decided_too() -> None:
    """Annotated metadata that cannot be hashed skips the cache, not the check."""
    assert is_assignable(Annotated[int, ["unhashable"]], float)


@pytest.mark.parametrize(
    ("annotation", "qualified", "short"),
    [
        (list[int], "list[int]", "list[int]"),
        (dict[str, Child], f"dict[str, {__name__}.Child]", "dict[str, Child]"),
        (int | None, "int | None", "int | None"),
        (Sequence[int], "Sequence[int]", "Sequence[int]"),
        (tuple[int, ...], "tuple[int, ...]", "tuple[int, ...]"),
        (Literal["a"], "Literal['a']", "Literal['a']"),
        (UserId, f"{__name__}.UserId", "UserId"),
        (Any, "Any", "Any"),
        (None, "None", "None"),
    ],
)
def test_type_names_are_stable_and_readable(annotation: object, qualified: str, short: str) -> None:
    """Names carry no memory address, so they can go into hashes and messages."""
    assert type_name(annotation) == qualified
    assert type_name(annotation, qualified=False) == short
