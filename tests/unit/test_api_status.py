"""A status built from the typed views in cleanroom.api writes exactly what the handlers write today from
dicts, so that each handler can move to them without a change on the cluster.

Each reference below is the handler's own expression (handlers/workspace.py, handlers/dataset.py `_status`,
handlers/export.py `_write`) applied to a status of the shape its plan returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cleanroom.api import (
    Condition,
    DatasetPhase,
    DatasetStatus,
    ExportRequestPhase,
    ExportRequestStatus,
    WorkspacePhase,
    WorkspaceStatus,
    decode,
    merge_conditions,
    overlay,
    with_conditions,
)

NOW = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def handler_today(
    current: Mapping[str, Any],
    partial: Mapping[str, Any],
    phase: str,
    conditions: list[Condition],
    generation: int,
) -> dict[str, Any]:
    return {
        **current,
        **partial,
        "phase": phase,
        "observedGeneration": generation,
        "conditions": merge_conditions(current.get("conditions"), conditions, generation=generation, now=NOW),
    }


def typed(
    cls: type[Any],
    current: Mapping[str, Any],
    partial: Mapping[str, Any],
    phase: Any,
    conditions: list[Condition],
) -> dict[str, Any]:
    status = replace(decode(cls, partial), phase=phase)
    return overlay(current, with_conditions(status, current, conditions, generation=4, now=NOW))


def test_workspace_status_typed_equals_todays_dict() -> None:
    current = {
        "phase": "Starting",
        "observedGeneration": 3,
        "startedBy": "alice@hospital.example",
        "lastActivity": "2026-12-02T14:00:00Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Starting",
                "message": "the notebook is starting",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-12-02T14:00:00Z",
            },
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "Scheduled",
                "message": "on node-1",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-12-02T14:01:00Z",
            },
        ],
    }
    # What workspaces.lifecycle puts in Plan.status for a running notebook.
    partial = {
        "expiresAt": "2026-12-09T14:00:00Z",
        "createdBy": "alice@hospital.example",
        "startedBy": "alice@hospital.example",
        "snapshot": {"digest": DIGEST, "shortDigest": "abababababab"},
        "url": "http://127.0.0.1:8000/user/alice/",
        "startedAt": "2026-12-02T14:02:00Z",
        "imageDigest": "sha256:" + "cd" * 32,
        "node": "node-1",
        "gpus": 1,
    }
    conditions = [
        Condition("Ready", "True", "Running", "JupyterLab answers"),
        Condition("Scheduled", "True", "Scheduled", "on node-1"),
    ]
    assert typed(WorkspaceStatus, current, partial, WorkspacePhase.RUNNING, conditions) == handler_today(
        current, partial, "Running", conditions, 4
    )


def test_dataset_status_typed_equals_todays_dict() -> None:
    current = {"phase": "Ingesting", "progress": {"filesDone": 2, "filesTotal": 9}}
    # datasets.plan.snapshot_ready's fields, with snapshots.manifest.summary as the snapshot.
    partial = {
        "snapshot": {
            "digest": DIGEST,
            "shortDigest": "abababababab",
            "files": 8,
            "bytes": 4_200_000,
            "patients": 3,
            "studies": 3,
            "series": 5,
            "modalities": ["CT", "MR"],
            "createdAt": "2026-12-02T14:29:00Z",
        },
        "ingestedSpec": "sha256:" + "ef" * 32,
        "quarantine": {"files": 1, "report": "s3://snapshots/sample-ct/quarantine.json"},
        "progress": {"filesDone": 9, "filesTotal": 9},
    }
    conditions = [Condition("Ready", "True", "SnapshotPublished", "snapshot abababababab published")]
    assert typed(DatasetStatus, current, partial, DatasetPhase.READY, conditions) == handler_today(
        current, partial, "Ready", conditions, 4
    )


def test_export_request_status_typed_equals_todays_dict() -> None:
    current = {"phase": "Checking", "requestedBy": "alice@hospital.example", "dataset": "sample-ct"}
    # airlock.plan's checked_status and judged decisions.
    partial = {
        "snapshot": DIGEST,
        "quarantine": {
            "manifest": "quarantine/ns/uid/manifest.json",
            "files": [{"path": "results/metrics.csv", "digest": "sha256:" + "12" * 32, "size": 120}],
            "bytes": 120,
        },
        "checks": [
            {"name": "NoDicom", "passed": True, "lookedAt": ["results/metrics.csv as CSV"], "findings": []},
            {
                "name": "NoIdentifiers",
                "passed": False,
                "lookedAt": ["results/metrics.csv as CSV"],
                "findings": [{"file": "results/metrics.csv", "detail": "pseudonym P-0001 in line 2"}],
            },
        ],
        "decisions": [
            {
                "by": "bob",
                "role": "DataSteward",
                "verdict": "Approve",
                "reason": "aggregates only",
                "at": "2026-12-02T14:20:00Z",
                "counted": False,
                "note": "not in the steward group",
            }
        ],
        "expiresAt": "2026-12-09T14:00:00Z",
    }
    conditions = [Condition("Checked", "False", "ChecksFailed", "failed: NoIdentifiers")]
    assert typed(
        ExportRequestStatus, current, partial, ExportRequestPhase.REJECTED, conditions
    ) == handler_today(current, partial, "Rejected", conditions, 4)
