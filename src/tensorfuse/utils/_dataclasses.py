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


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One setting of a configuration dataclass, for the generated configuration reference."""

    name: str
    type: str
    default: str
    meaning: str


def describe_fields(cls) -> list[FieldDoc]:
    """Every field of the dataclass ``cls`` with its type, default and meaning, the meaning read
    from where the code states it once: the class docstring's ``Attributes`` entry (``name : ...``,
    several names separated by commas), else the comment at the end of the field's line, else the
    comment lines right above it. A field without any has an empty meaning (a test forbids it)."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    where = {s.target.id: s.lineno for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    attributes = _attribute_entries(inspect.getdoc(cls) or "")
    docs = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meaning = attributes.get(f.name)
        line = where.get(f.name)
        if not meaning and line is not None:
            if line in comments and not lines[line - 1].lstrip().startswith("#"):
                meaning = comments[line]
            else:
                above, k = [], line - 1
                while k >= 1 and lines[k - 1].lstrip().startswith("#"):
                    above.insert(0, comments.get(k, ""))
                    k -= 1
                meaning = " ".join(above)
        docs.append(FieldDoc(f.name, _type_name(hints.get(f.name, f.type)), _default_text(f), " ".join((meaning or "").split())))
    return docs


def _attribute_entries(doc: str) -> dict[str, str]:
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes") + 2
    except StopIteration:
        return {}
    entries: dict[str, str] = {}
    names: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            continue
        if not line.startswith(" ") and " : " in line:
            head, _, text = line.partition(" : ")
            names = [n.strip() for n in head.split(",")]
            for name in names:
                entries[name] = text.strip()
        elif line.startswith(" ") and names:
            for name in names:
                entries[name] += " " + line.strip()
        else:
            break
    return entries


def _type_name(annotation) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    return str(text).replace("typing.", "").replace("NoneType", "None")


def _default_text(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        if dataclasses.is_dataclass(f.default_factory):  # a nested section: its own table
            return "(section)"
        return repr(f.default_factory())
    return "required"
