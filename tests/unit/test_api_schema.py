"""The CRD schema derived from the API types, and the typed status the operator writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cleanroom.api import (
    Condition,
    ExportRequestCondition,
    ExportRequestPhase,
    ExportRequestStatus,
    JudgedDecision,
    PinnedSnapshot,
    StatusCondition,
    WorkspacePhase,
    WorkspaceStatus,
    decode,
    merge_conditions,
    overlay,
    to_json,
    typed_conditions,
)
from cleanroom.api._schema import Rule, doc, object_schema
from cleanroom.api.crdgen import main as crdgen
from cleanroom.api.crds import RESOURCES


# Module level: the schema reads the type hints, which a class inside a test function cannot resolve.
@dataclass(frozen=True)
class Inner:
    size: int = field(default=1, metadata=doc("Size.", default=True))


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default=Inner(size=2), metadata=doc("Inner.", default=True))


def test_a_field_without_a_description_is_refused() -> None:
    @dataclass(frozen=True)
    class Undocumented:
        name: str = ""

    with pytest.raises(TypeError, match=r"Undocumented\.name: no description"):
        object_schema(Undocumented)


def test_an_object_default_other_than_empty_is_refused() -> None:
    """The API server applies an object's default as {} and then its fields' defaults; a Python default
    that sets a field differently would decode to something the cluster never holds."""

    with pytest.raises(TypeError, match="inner"):
        object_schema(Outer)


def test_schema_of_a_documented_type() -> None:
    @dataclass(frozen=True)
    class Ref:
        VALIDATIONS = (Rule("self.name != 'x'", "not x", field_path=".name"),)

        name: str = field(metadata=doc("The name.", max_length=63))
        gpus: int = field(default=0, metadata=doc("GPUs.", minimum=0, default=True))
        tags: tuple[str, ...] | None = field(default=None, metadata=doc("Tags.", list_type="set"))

    assert object_schema(Ref) == {
        "type": "object",
        "required": ["name"],
        "x-kubernetes-validations": [{"rule": "self.name != 'x'", "message": "not x", "fieldPath": ".name"}],
        "properties": {
            "name": {"type": "string", "description": "The name.", "maxLength": 63},
            "gpus": {"type": "integer", "description": "GPUs.", "default": 0, "minimum": 0},
            "tags": {
                "type": "array",
                "description": "Tags.",
                "x-kubernetes-list-type": "set",
                "items": {"type": "string"},
            },
        },
    }


def test_status_json_leaves_out_what_is_not_set() -> None:
    status = WorkspaceStatus(
        phase=WorkspacePhase.RUNNING,
        observed_generation=3,
        snapshot=PinnedSnapshot(digest="sha256:" + "a" * 64, short_digest="a" * 12),
    )
    assert to_json(status) == {
        "observedGeneration": 3,
        "phase": "Running",
        "snapshot": {"digest": "sha256:" + "a" * 64, "shortDigest": "a" * 12},
    }


def test_overlay_keeps_the_fields_a_partial_status_does_not_set() -> None:
    current = {"phase": "Starting", "startedBy": "alice", "node": "node-1"}
    assert overlay(current, WorkspaceStatus(phase=WorkspacePhase.RUNNING, node="node-2")) == {
        "phase": "Running",
        "startedBy": "alice",
        "node": "node-2",
    }


def test_a_written_status_reads_back_as_the_same_typed_status() -> None:
    merged = merge_conditions(
        None,
        [Condition("Checked", "True", "ChecksPassed", "all checks passed")],
        generation=2,
        now=datetime(2026, 12, 2, 14, 0, tzinfo=UTC),
    )
    status = ExportRequestStatus(
        phase=ExportRequestPhase.AWAITING_APPROVAL,
        requested_by="alice",
        decisions=(JudgedDecision(by="bob", role="DataSteward", verdict="Approve", counted=True),),
        conditions=typed_conditions(ExportRequestCondition, merged),
    )
    assert to_json(status)["conditions"] == merged
    assert decode(ExportRequestStatus, to_json(status)) == status


def test_typed_conditions_keep_every_field_merge_conditions_writes() -> None:
    merged = merge_conditions(
        None,
        [Condition("Ready", "False", "DatasetNotFound", "no Dataset")],
        generation=5,
        now=datetime(2026, 12, 2, 14, 0, tzinfo=UTC),
    )
    (condition,) = typed_conditions(StatusCondition, merged)
    assert condition == StatusCondition(
        type="Ready",
        status="False",
        reason="DatasetNotFound",
        message="no Dataset",
        observed_generation=5,
        last_transition_time="2026-12-02T14:00:00Z",
    )


def test_crdgen_check_fails_on_a_hand_edited_file_and_passes_on_generated_ones(tmp_path: Path) -> None:
    assert crdgen([str(tmp_path)]) == 0
    assert crdgen(["--check", str(tmp_path)]) == 0
    edited = tmp_path / RESOURCES[1].filename
    edited.write_text(edited.read_text().replace("maxLength: 512", "maxLength: 4096"))
    assert crdgen(["--check", str(tmp_path)]) == 1
