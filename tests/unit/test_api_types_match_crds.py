"""The CRDs in crds/ are the API contract, generated from the Python types in cleanroom.api: the files must be
what the types give (semantically here, to the byte in test_crd_files_are_generated), and the types must
decode what the CRDs admit."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleanroom.api import (
    DatasetSpec,
    DatasetStatus,
    ExportRequestSpec,
    ExportRequestStatus,
    WorkspaceSpec,
    WorkspaceStatus,
    dataclass_fields_by_json_name,
)
from cleanroom.api.crdgen import render
from cleanroom.api.crds import RESOURCES, CustomResource, custom_resource_definition

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts/cleanroom/crds"


def spec_schema(filename: str, part: str = "spec") -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / filename).read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]
    return schema


def differences(generated: Any, committed: Any, path: str) -> list[str]:
    """Where two parsed YAML documents differ, as paths (a whole-dict assert would print two pages)."""
    if isinstance(generated, dict) and isinstance(committed, dict):
        found = []
        for key in sorted(set(generated) | set(committed), key=str):
            if key not in generated:
                found.append(f"{path}.{key}: in the file, not generated from the types")
            elif key not in committed:
                found.append(f"{path}.{key}: generated from the types, not in the file")
            else:
                found += differences(generated[key], committed[key], f"{path}.{key}")
        return found
    if isinstance(generated, list) and isinstance(committed, list) and len(generated) == len(committed):
        return [
            d
            for i, pair in enumerate(zip(generated, committed, strict=True))
            for d in differences(*pair, f"{path}[{i}]")
        ]
    return [] if generated == committed else [f"{path}: types give {generated!r}, the file has {committed!r}"]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
@pytest.mark.parametrize("directory", [CRDS, CHART_CRDS], ids=["crds", "chart"])
def test_crd_files_say_what_the_types_say(resource: CustomResource, directory: Path) -> None:
    """Every description, limit, default, CEL rule and message, printer column and name: kubectl explain
    reads the same from the types as from the files."""
    committed = yaml.safe_load((directory / resource.filename).read_text())
    assert differences(custom_resource_definition(resource), committed, resource.kind) == []


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
@pytest.mark.parametrize("directory", [CRDS, CHART_CRDS], ids=["crds", "chart"])
def test_crd_files_are_generated(resource: CustomResource, directory: Path) -> None:
    """crds/ and the chart's copy are make crds-gen's output to the byte (hack/chart-check.sh compares the
    two with cmp): a hand edit to a file, or a type changed without regenerating, fails here."""
    assert (directory / resource.filename).read_text() == render(resource), "run make crds-gen"


def unwrap(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return unwrap(inner)
    return hint


def compare(cls: type, schema: dict[str, Any], path: str) -> list[str]:
    problems: list[str] = []
    fields = dataclass_fields_by_json_name(cls)
    properties = schema.get("properties", {})
    for missing in sorted(set(properties) - set(fields)):
        problems.append(f"{path}.{missing}: in the CRD but not in {cls.__name__}")
    for extra in sorted(set(fields) - set(properties)):
        problems.append(f"{path}.{extra}: in {cls.__name__} but not in the CRD")
    required = set(schema.get("required", []))
    for json_name, (field, hint) in fields.items():
        if json_name not in properties:
            continue
        prop = properties[json_name]
        has_default = (
            field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        )
        if json_name in required and has_default:
            problems.append(f"{path}.{json_name}: required in the CRD but has a default in Python")
        if json_name not in required and not has_default:
            problems.append(f"{path}.{json_name}: optional in the CRD but required in Python")
        if "default" in prop and field.default is not dataclasses.MISSING:
            python_default = field.default
            if isinstance(python_default, enum.Enum):
                python_default = python_default.value
            if isinstance(python_default, tuple):
                python_default = [v.value if isinstance(v, enum.Enum) else v for v in python_default]
            if not dataclasses.is_dataclass(python_default) and python_default != prop["default"]:
                problems.append(f"{path}.{json_name}: default {python_default!r} != CRD {prop['default']!r}")
        inner = unwrap(hint)
        if typing.get_origin(inner) is tuple:
            if prop.get("type") != "array":
                problems.append(f"{path}.{json_name}: a tuple in Python but {prop.get('type')} in the CRD")
            item = typing.get_args(inner)[0]
            is_enum = isinstance(item, type) and issubclass(item, enum.Enum)
            if is_enum and sorted(m.value for m in item) != sorted(prop["items"].get("enum", [])):
                problems.append(f"{path}.{json_name}: enum values differ")
        elif typing.get_origin(inner) is Mapping:
            value_type = typing.get_args(inner)[1]
            expected_value = {bool: "boolean", int: "integer", str: "string"}[value_type]
            if (
                prop.get("type") != "object"
                or prop.get("additionalProperties", {}).get("type") != expected_value
            ):
                problems.append(f"{path}.{json_name}: a map of {expected_value} in Python, not in the CRD")
        elif dataclasses.is_dataclass(inner):
            problems.extend(compare(inner, prop, f"{path}.{json_name}"))
        elif isinstance(inner, type) and issubclass(inner, enum.Enum):
            if sorted(m.value for m in inner) != sorted(prop.get("enum", [])):
                problems.append(f"{path}.{json_name}: enum values differ from the CRD")
        elif typing.get_origin(inner) is typing.Literal:
            if sorted(typing.get_args(inner)) != sorted(prop.get("enum", [])):
                problems.append(f"{path}.{json_name}: literal values differ from the CRD's enum")
        else:
            expected = {bool: "boolean", int: "integer", str: "string"}[inner]
            actual = prop.get("type") or ("string" if prop.get("x-kubernetes-int-or-string") else None)
            if expected != actual:
                problems.append(f"{path}.{json_name}: {expected} in Python, {actual} in the CRD")
    return problems


@pytest.mark.parametrize(
    ("cls", "filename"),
    [
        (DatasetSpec, "cleanroom.dev_datasets.yaml"),
        (WorkspaceSpec, "cleanroom.dev_workspaces.yaml"),
        (ExportRequestSpec, "cleanroom.dev_exportrequests.yaml"),
    ],
)
def test_python_types_mirror_the_crd_schema(cls: type, filename: str) -> None:
    assert compare(cls, spec_schema(filename), "spec") == []


@pytest.mark.parametrize(
    ("cls", "filename"),
    [
        (DatasetStatus, "cleanroom.dev_datasets.yaml"),
        (WorkspaceStatus, "cleanroom.dev_workspaces.yaml"),
        (ExportRequestStatus, "cleanroom.dev_exportrequests.yaml"),
    ],
)
def test_status_types_mirror_the_crd_status_schema(cls: type, filename: str) -> None:
    assert compare(cls, spec_schema(filename, "status"), "status") == []


def test_every_crd_field_has_a_description() -> None:
    def walk(schema: dict[str, Any], path: str) -> list[str]:
        missing = []
        for name, prop in schema.get("properties", {}).items():
            here = f"{path}.{name}"
            if name not in ("apiVersion", "kind", "metadata") and not prop.get("description"):
                missing.append(here)
            missing += walk(prop, here)
            if "items" in prop:
                missing += walk(prop["items"], here + "[]")
        return missing

    for crd_file in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(crd_file.read_text())
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert walk(root, crd["spec"]["names"]["kind"]) == [], crd_file.name
