"""Decoding of custom-resource JSON into frozen dataclasses, driven by their type hints.

Field names are the snake_case of the CRD's camelCase names; a field whose JSON name differs from that
rule carries ``metadata={"json": "..."}``. Decoding is lenient on purpose: the API server has already
validated the object against the CRD schema, and the CRD-versus-types test keeps both in step.
"""

from __future__ import annotations

import dataclasses
import enum
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
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = json_name(field)
        if name in data and data[name] is not None:
            kwargs[field.name] = _decode_value(hints[field.name], data[name])
    return cls(**kwargs)


def _decode_value(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _decode_value(inner[0], value)
    if origin in (tuple, list):
        (item_hint, *_) = typing.get_args(hint)
        return tuple(_decode_value(item_hint, item) for item in value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return decode(hint, value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is str:
        return str(value)
    return value


def dataclass_fields_by_json_name(cls: type[Any]) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """Map of JSON property name to (field, resolved type hint), for the CRD-versus-types test."""
    hints = typing.get_type_hints(cls)
    return {json_name(f): (f, hints[f.name]) for f in dataclasses.fields(cls)}
