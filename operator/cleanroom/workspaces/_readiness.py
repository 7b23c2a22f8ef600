"""Whether a Workspace can start, judged from its spec and its Dataset: a pure decision.

The result names the conditions and the phase that the handlers write to ``Workspace.status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api import Condition, WorkspacePhase, WorkspaceSpec, is_true
from cleanroom.api.contract import READY


@dataclass(frozen=True)
class WorkspaceAssessment:
    phase: WorkspacePhase
    conditions: tuple[Condition, ...]
    snapshot: str = ""


def latest_snapshot(dataset: Mapping[str, Any]) -> str:
    """The digest of the Dataset's Ready snapshot, or '' while it has none."""
    status = dataset.get("status") or {}
    if not is_true(status.get("conditions"), READY):
        return ""
    return str((status.get("snapshot") or {}).get("digest") or "")


def assess_dataset(spec: WorkspaceSpec, dataset: Mapping[str, Any] | None) -> WorkspaceAssessment:
    """Judge the Workspace's Dataset: missing, without a snapshot yet, or usable (with its snapshot)."""
    name = spec.dataset.name
    if dataset is None:
        return WorkspaceAssessment(
            phase=WorkspacePhase.PENDING,
            conditions=(
                Condition(
                    READY,
                    "False",
                    "DatasetNotFound",
                    f'Dataset "{name}" does not exist. Create it, or set spec.dataset.name to one of '
                    "the Datasets listed by `kubectl get datasets`. The workspace starts by itself "
                    "once the Dataset is there.",
                ),
            ),
        )
    snapshot = spec.dataset.snapshot or latest_snapshot(dataset)
    if not snapshot:
        dataset_phase = (dataset.get("status") or {}).get("phase") or "Pending"
        return WorkspaceAssessment(
            phase=WorkspacePhase.PENDING,
            conditions=(
                Condition(
                    READY,
                    "False",
                    "DatasetNotReady",
                    f'Dataset "{name}" has no published snapshot yet (its phase is {dataset_phase}). '
                    "The workspace starts by itself once a snapshot is Ready; "
                    f"follow it with `kubectl get dataset {name} -w`.",
                ),
            ),
        )
    return WorkspaceAssessment(phase=WorkspacePhase.PENDING, conditions=(), snapshot=snapshot)
