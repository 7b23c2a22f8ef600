"""Decoding of custom-resource JSON into frozen dataclasses, driven by their type hints.

Field names are the snake_case of the CRD's camelCase names; a field whose JSON name differs from that
rule carries ``metadata={"json": "..."}``. Decoding is lenient on purpose: the API server has already
validated the object against the CRD schema, and the CRD-versus-types test keeps both in step.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def json_name(field: dataclasses.Field[Any]) -> str:
    """The CRD property name for a dataclass field."""
    explicit = field.metadata.get("json")
    if explicit:
        return str(explicit)
    head, *rest = field.name.split("_")
    return head + "".join(part.title() for part in rest)


def decode(cls: type[T], data: Mapping[str, Any] | None) -> T:
    """Build ``cls`` from a JSON mapping, recursing into nested dataclasses, lists and optionals."""
    data = data or {}
    kwargs: dict[str, Any] = {}
    for name, key, hint in _fields(cls):  # type: ignore[arg-type]
        value = data.get(key)
        if value is not None:
            kwargs[name] = _decode_value(hint, value)
    return cls(**kwargs)


@functools.cache
def _fields(cls: type[Any]) -> tuple[tuple[str, str, Any], ...]:
    """(field name, JSON name, resolved type hint) of a dataclass. Resolving hints is slow (it evaluates
    every annotation), and the operator decodes a spec on every pass: once per class is enough."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, json_name(f), hints[f.name]) for f in dataclasses.fields(cls))


@functools.cache
def _shape(hint: Any) -> tuple[str, Any]:
    """How a value of ``hint`` is decoded: ("optional"|"sequence", inner hint), ("dataclass"|"enum", type),
    ("str", None) or ("as-is", None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return "optional", next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if origin in (tuple, list):
        return "sequence", typing.get_args(hint)[0]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return "dataclass", hint
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "enum", hint
    return ("str", None) if hint is str else ("as-is", None)


def _decode_value(hint: Any, value: Any) -> Any:
    shape, inner = _shape(hint)
    if shape == "optional":
        return _decode_value(inner, value)
    if shape == "sequence":
        return tuple(_decode_value(inner, item) for item in value)
    if shape == "dataclass":
        return decode(inner, value)
    if shape == "enum":
        return inner(value)
    if shape == "str":
        return str(value)
    return value


def dataclass_fields_by_json_name(cls: type[Any]) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """Map of JSON property name to (field, resolved type hint), for the CRD-versus-types test."""
    hints = typing.get_type_hints(cls)
    return {json_name(f): (f, hints[f.name]) for f in dataclasses.fields(cls)}
