"""Type checks for the typed configuration dataclasses (values from YAML or the command line)."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Callable

_SIMPLE = (bool, int, float, str, type(None))


def _accepts(annotation, value) -> bool | None:
    """Whether ``value`` fits ``annotation``; None where the annotation is not a plain scalar type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if not all(m in _SIMPLE for m in members):
            return None
        return any(_accepts(m, value) for m in members)
    if annotation not in _SIMPLE:
        return None
    if annotation is type(None):
        return value is None
    if isinstance(value, bool):  # bool is an int subclass: only a bool field takes it
        return annotation is bool
    if annotation is float:
        return isinstance(value, (int, float))
    return isinstance(value, annotation)


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_field_types(instance, fail: Callable[[str, Any, str], None]) -> None:
    """Call ``fail(name, value, why)`` for the first field whose value does not fit its scalar type
    (``int``, ``float``, ``str``, ``bool``, or a union of those with ``None``); other fields are the
    dataclass's own business. Catches ``lr: abc`` before a comparison deep inside fails on it."""
    hints = _hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if _accepts(hints[f.name], value) is False:
            expected = " or ".join("null" if t is type(None) else t.__name__
                                   for t in (typing.get_args(hints[f.name]) or (hints[f.name],)))
            fail(f.name, value, f"expected {expected}")
