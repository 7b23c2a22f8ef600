"""The OpenAPI v3 schema of an API type, derived from its dataclass: one source for the Python view and the CRD.

A field says how it appears in the CRD through ``field(metadata=doc(...))``: its description (what
``kubectl explain`` prints), its limits, its CEL rules (``x-kubernetes-validations``) and whether the API
server applies its Python default. The JSON type comes from the type hint, as ``_decode`` reads it: ``str``,
``int``, ``bool``, a ``StrEnum`` or ``Literal`` (an enum), ``tuple[X, ...]`` (an array), ``Mapping[str, X]``
(a map), another dataclass (an object whose required properties are its fields without a default), and
``X | None`` for what may be absent. A rule on a whole object is the class's ``VALIDATIONS``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api._decode import json_name


@dataclass(frozen=True)
class Rule:
    """A CEL rule the API server checks on create and update, and the message it answers when the rule fails."""

    rule: str
    message: str
    # Where the error points, relative to the object the rule is on (e.g. ".keySecretRef").
    field_path: str = ""


@dataclass(frozen=True, kw_only=True)
class Schema:
    """How one value appears in the CRD beyond its type. ``items`` constrains each item of an array, or each
    value of a map."""

    description: str = ""
    # The API server writes the field's Python default when the field is absent, so code that decodes an
    # object the API server never saw (the CLI, tests) gets what the cluster would.
    default: bool = False
    format: str = ""
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    max_properties: int | None = None
    # A Kubernetes quantity, which clients send as a number or a string.
    int_or_string: bool = False
    # "set" or "map": how server-side apply merges the list (and, for a set, that its items are unique).
    list_type: str = ""
    list_map_keys: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    items: Schema | None = None


def doc(description: str, *, json: str = "", **limits: Any) -> dict[str, Any]:
    """Metadata of a dataclass field: its CRD description and limits (the keywords of ``Schema``), and its
    JSON name where the camelCase of the field's name is not it."""
    metadata: dict[str, Any] = {"schema": Schema(description=description, **limits)}
    if json:
        metadata["json"] = json
    return metadata


def object_schema(cls: type[Any]) -> dict[str, Any]:
    """The OpenAPI schema of a dataclass: an object with its fields as properties."""
    hints = typing.get_type_hints(cls)
    required: list[str] = []
    properties: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = json_name(field)
        spec = field.metadata.get("schema")
        if not isinstance(spec, Schema) or not spec.description:
            raise TypeError(f"{cls.__name__}.{field.name}: no description (field(metadata=doc(...)))")
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(name)
        properties[name] = _property(hints[field.name], spec, _crd_default(field, spec))
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = required
    validations: tuple[Rule, ...] = getattr(cls, "VALIDATIONS", ())
    if validations:
        schema["x-kubernetes-validations"] = [_rule(rule) for rule in validations]
    schema["properties"] = properties
    return schema


def _crd_default(field: dataclasses.Field[Any], spec: Schema) -> Any:
    if not spec.default:
        return dataclasses.MISSING
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # An object defaulted as a whole is {}: the API server then applies its fields' own defaults.
        if value != type(value)():
            raise TypeError(
                f"{field.name}: an object's CRD default is {{}}, so its Python default is {type(value).__name__}()"
            )
        return {}
    return to_json(value)


def to_json(value: Any) -> Any:
    """A Python value as the JSON the API server stores: a dataclass as an object of its non-None fields."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            json_name(field): to_json(getattr(value, field.name))
            for field in dataclasses.fields(value)
            if getattr(value, field.name) is not None
        }
    return value


def _property(hint: Any, spec: Schema, default: Any) -> dict[str, Any]:
    typed = _type_schema(_unwrap(hint), spec)
    # Keys in the order people read a schema: what it is, what it means, what it takes, then what it holds.
    schema: dict[str, Any] = {
        key: typed.pop(key) for key in ("type", "x-kubernetes-int-or-string") if key in typed
    }
    if spec.description:
        schema["description"] = spec.description
    if "enum" in typed:
        schema["enum"] = typed.pop("enum")
    if default is not dataclasses.MISSING:
        schema["default"] = default
    schema.update(_limits(spec))
    rules = typed.pop("x-kubernetes-validations", []) + [_rule(rule) for rule in spec.rules]
    if rules:
        schema["x-kubernetes-validations"] = rules
    schema.update(typed)
    return schema


def _unwrap(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return inner
    return hint


def _type_schema(hint: Any, spec: Schema) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return {"type": "array", "items": _property(typing.get_args(hint)[0], spec.items or Schema(), _NONE)}
    if origin is Mapping:
        value = _property(typing.get_args(hint)[1], spec.items or Schema(), _NONE)
        return {"type": "object", "additionalProperties": value}
    if origin is typing.Literal:
        return {"type": "string", "enum": list(typing.get_args(hint))}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return object_schema(hint)
    if hint is str:
        return {"x-kubernetes-int-or-string": True} if spec.int_or_string else {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    raise TypeError(f"no OpenAPI type for {hint!r}")


_NONE: Any = dataclasses.MISSING

# Schema keyword for each limit, in the order the CRDs list them.
_LIMITS = (
    ("format", "format"),
    ("min_length", "minLength"),
    ("max_length", "maxLength"),
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("min_items", "minItems"),
    ("max_items", "maxItems"),
    ("max_properties", "maxProperties"),
    ("list_type", "x-kubernetes-list-type"),
)


def _limits(spec: Schema) -> dict[str, Any]:
    limits = {key: getattr(spec, name) for name, key in _LIMITS if getattr(spec, name) not in (None, "")}
    if spec.list_map_keys:
        limits["x-kubernetes-list-map-keys"] = list(spec.list_map_keys)
    return limits


def _rule(rule: Rule) -> dict[str, str]:
    out = {"rule": rule.rule, "message": rule.message}
    if rule.field_path:
        out["fieldPath"] = rule.field_path
    return out
