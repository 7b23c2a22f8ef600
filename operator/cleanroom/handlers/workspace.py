"""Thin kopf handlers for Workspaces: read the Workspace and its Dataset, ask the pure core, write status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from cleanroom.api import DATASETS, GROUP, VERSION, WORKSPACES, WorkspaceSpec, decode, merge_conditions
from cleanroom.handlers import _kube
from cleanroom.workspaces import assess_dataset


@kopf.index(GROUP, VERSION, DATASETS)
def datasets_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {name: {"spec": dict(body.spec), "status": dict(body.status)}}


@kopf.index(GROUP, VERSION, WORKSPACES)
def workspaces_by_dataset(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, tuple[str, str]]:
    return {str(spec.get("dataset", {}).get("name", "")): (namespace, name)}


def _only(store: Any) -> dict[str, Any] | None:
    values = list(store) if store is not None else []
    return values[0] if values else None


def reconcile_workspace(workspace: Mapping[str, Any], dataset: Mapping[str, Any] | None) -> None:
    """Write the status the core decides for this Workspace; emit an Event when Ready's reason changes."""
    metadata = workspace["metadata"]
    spec = decode(WorkspaceSpec, workspace["spec"])
    assessment = assess_dataset(spec, dataset)
    current = dict(workspace.get("status") or {})
    conditions = merge_conditions(
        current.get("conditions"),
        assessment.conditions,
        generation=int(metadata.get("generation", 0)),
        now=datetime.now(UTC),
    )
    desired = {
        **current,
        "phase": assessment.phase,
        "observedGeneration": int(metadata.get("generation", 0)),
        "conditions": conditions,
    }
    if desired == current:
        return
    _kube.patch_workspace_status(metadata["namespace"], metadata["name"], desired)
    before = {c["type"]: c.get("reason") for c in current.get("conditions") or ()}
    for condition in assessment.conditions:
        if before.get(condition.type) != condition.reason:
            kind = "Normal" if condition.status == "True" else "Warning"
            kopf.event(dict(workspace), type=kind, reason=condition.reason, message=condition.message)


@kopf.on.resume(GROUP, VERSION, WORKSPACES)
@kopf.on.create(GROUP, VERSION, WORKSPACES)
@kopf.on.update(GROUP, VERSION, WORKSPACES)
def workspace_changed(
    body: kopf.Body, spec: kopf.Spec, datasets_by_name: kopf.Index[str, Any], **_: Any
) -> None:
    dataset = _only(datasets_by_name.get(str(spec.get("dataset", {}).get("name", ""))))
    reconcile_workspace(body, dataset)


@kopf.on.event(GROUP, VERSION, DATASETS)
def dataset_event(
    name: str, type: str | None, body: kopf.Body, workspaces_by_dataset: kopf.Index[str, Any], **_: Any
) -> None:
    """A Dataset appeared, changed or went: re-judge every Workspace that names it (level-triggered)."""
    dataset = None if type == "DELETED" else {"spec": dict(body.spec), "status": dict(body.status)}
    for namespace, workspace_name in list(workspaces_by_dataset.get(name, ())):
        workspace = _kube.get_workspace(namespace, workspace_name)
        if workspace is not None:
            reconcile_workspace(workspace, dataset)
