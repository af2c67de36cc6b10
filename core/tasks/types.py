"""Whether one task's output type can feed another task's parameter, decided before any run.

The planner checks every data edge (a parameter named after an upstream task) with
:func:`is_assignable`. The rules follow typing's assignability, with one deliberate
difference: containers are **covariant**. A value crosses a task boundary as a copy
(serialized by the upstream, validated into the parameter's type by pydantic), so the
aliasing that makes ``list[int]`` → ``list[float]`` unsafe for mypy cannot happen here,
and pydantic validates it losslessly. In short:

=============================  ======  ==============================================
upstream returns → parameter   fits?   why
=============================  ======  ==============================================
``int`` → ``float``            yes     the numeric tower (``int`` → ``float`` → ``complex``)
``bool`` → ``int``             yes     subclass
``Child`` → ``Base``           yes     subclass (pydantic models and plain classes)
``Base`` → ``Child``           no      a base is not a subclass
``list[int]`` → ``list[float]``  yes   covariant containers (a copy crosses the boundary)
``list[int]`` → ``Sequence[int]``  yes ``list`` is a ``Sequence``
``Sequence[int]`` → ``list[int]``  no  not every sequence is a list
``X`` → ``X | None``           yes     a union accepts any member
``X | None`` → ``X``           no      ``None`` does not fit ``X``
``A | B`` → ``C``              only if ``A`` and ``B`` both fit ``C``
``tuple[int, str]`` → ``tuple[float, ...]``  no: ``str`` is not a ``float``
``Literal["a"]`` → ``str``     yes     the literal's values are ``str``
``UserId`` (NewType of int) → ``int``  yes; ``int`` → ``UserId`` no
anything ↔ ``Any``/``object``  yes     unannotated means unchecked
=============================  ======  ==============================================

Forms it does not understand (a ``TypedDict`` into another, a ``Protocol``) fit only
when both sides are the same type.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from functools import lru_cache
from typing import Any, Literal, Union, get_args, get_origin

NoneType = type(None)
_NUMERIC_TOWER: dict[type, tuple[type, ...]] = {
    int: (float, complex),
    float: (complex,),
}
# ABCs whose single type argument is what iterating the container yields.
_ITEM_ABCS = frozenset(
    {
        collections.abc.Iterable,
        collections.abc.Collection,
        collections.abc.Container,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Set,
        collections.abc.MutableSet,
        collections.abc.Reversible,
    }
)


def type_name(annotation: object, *, qualified: bool = True) -> str:
    """A stable, readable name for a type (``list[int]``, ``shop.Order | None``).

    Stable across processes (no memory addresses), so it is safe in content hashes.
    With ``qualified=False`` classes are named without their module (``Order``), for
    tables and diagrams.
    """
    try:
        return _cached_type_name(annotation, qualified)
    except TypeError:  # an unhashable annotation (Annotated metadata): name it uncached
        return _type_name(annotation, qualified)


def _type_name(annotation: object, qualified: bool) -> str:
    if annotation is Any:
        return "Any"
    if annotation is None or annotation is NoneType:
        return "None"
    if isinstance(annotation, typing.TypeVar):
        return f"~{annotation.__name__}"
    origin = get_origin(annotation)
    args = get_args(annotation)
    if _is_union(annotation):
        return " | ".join(type_name(a, qualified=qualified) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Annotated:
        return type_name(args[0], qualified=qualified)
    if origin is not None:
        inner = ", ".join(
            "..." if a is Ellipsis else type_name(a, qualified=qualified) for a in args
        )
        name = type_name(origin, qualified=qualified)
        return f"{name}[{inner}]" if args else name
    if isinstance(annotation, type) or getattr(annotation, "__supertype__", None) is not None:
        module = getattr(annotation, "__module__", "")
        qualname = getattr(annotation, "__qualname__", str(annotation))
        if not qualified or module in ("builtins", "collections.abc"):
            return str(qualname)
        return f"{module}.{qualname}"
    return str(annotation).replace("typing.", "")


_cached_type_name = lru_cache(maxsize=4096)(_type_name)


def is_assignable(source: object, target: object) -> bool:
    """True when a value of type ``source`` can be passed where ``target`` is expected.

    Args:
        source: What the upstream task returns (its return annotation).
        target: What the downstream parameter is annotated with.

    Returns:
        Whether the planner lets the edge through (see the module docstring's table).
    """
    try:
        return _cached_assignable(source, target)
    except TypeError:  # an unhashable annotation (Annotated metadata): decide uncached
        return _assignable(source, target)


def _assignable(source: object, target: object) -> bool:
    source, target = _strip(source), _strip(target)
    if source is target or source == target:
        return True
    if target is Any or target is object or source is Any:
        return True
    if isinstance(source, typing.TypeVar):
        return source.__bound__ is None or is_assignable(source.__bound__, target)
    if isinstance(target, typing.TypeVar):
        return target.__bound__ is None or is_assignable(source, target.__bound__)
    if _is_union(source):
        return all(is_assignable(member, target) for member in get_args(source))
    if _is_union(target):
        return any(is_assignable(source, member) for member in get_args(target))
    if get_origin(source) is Literal:
        return _literal_fits(get_args(source), target)
    if get_origin(target) is Literal:
        return False
    supertype = getattr(source, "__supertype__", None)
    if supertype is not None:  # a NewType is its supertype, not the other way round
        return is_assignable(supertype, target)
    return _class_fits(source, target)


_cached_assignable = lru_cache(maxsize=4096)(_assignable)


def _strip(annotation: object) -> object:
    if annotation is None:
        return NoneType
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: object) -> bool:
    origin = get_origin(annotation)
    return origin is Union or origin is types.UnionType


def _literal_fits(values: tuple[object, ...], target: object) -> bool:
    if get_origin(target) is Literal:
        return set(values) <= set(get_args(target))
    return all(is_assignable(type(value), target) for value in values)


def _class_fits(source: object, target: object) -> bool:
    source_origin = get_origin(source) or source
    target_origin = get_origin(target) or target
    if not isinstance(source_origin, type) or not isinstance(target_origin, type):
        return False
    for number, wider in _NUMERIC_TOWER.items():
        if target_origin in wider and issubclass(source_origin, number):
            return True  # int (and bool) → float → complex
    try:
        if not issubclass(source_origin, target_origin):
            return False
    except TypeError:  # TypedDict, Protocol without runtime_checkable: same type only
        return False
    target_args = get_args(target)
    if not target_args:
        return True  # a bare target (list, Mapping) takes any arguments
    return _args_fit(source_origin, get_args(source), target_origin, target_args)


def _args_fit(
    source_origin: type,
    source_args: tuple[Any, ...],
    target_origin: type,
    target_args: tuple[Any, ...],
) -> bool:
    """Covariant check of type arguments once the origins are known to fit."""
    if not source_args:
        return True  # a bare source (list) holds Any
    if target_origin is tuple:
        return _tuple_fits(source_args, target_args)
    if source_origin is tuple:  # tuple[int, str] → Sequence[X]: every element fits X
        items = source_args[:1] if _is_variadic(source_args) else source_args
        return all(is_assignable(item, target_args[0]) for item in items)
    if issubclass(source_origin, collections.abc.Mapping):
        if issubclass(target_origin, collections.abc.Mapping):
            return all(is_assignable(s, t) for s, t in zip(source_args, target_args, strict=False))
        return is_assignable(source_args[0], target_args[0])  # iterating a mapping: its keys
    if target_origin in _ITEM_ABCS or len(source_args) == len(target_args):
        return all(is_assignable(s, t) for s, t in zip(source_args, target_args, strict=False))
    return False


def _is_variadic(args: tuple[Any, ...]) -> bool:
    return len(args) == 2 and args[1] is Ellipsis


def _tuple_fits(source_args: tuple[Any, ...], target_args: tuple[Any, ...]) -> bool:
    if _is_variadic(target_args):
        items = source_args[:1] if _is_variadic(source_args) else source_args
        return all(is_assignable(item, target_args[0]) for item in items)
    if _is_variadic(source_args) or len(source_args) != len(target_args):
        return False
    return all(is_assignable(s, t) for s, t in zip(source_args, target_args, strict=True))
