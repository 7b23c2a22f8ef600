"""Pure builders and decisions for Workspaces: spec (+ Dataset status) in, conditions and manifests out.

The names they share with the hub and the chart (labels, annotations, object names, condition types) are
`cleanroom.api.contract`'s; `object_name` is re-exported here for the builders' callers."""

from cleanroom.api.contract import object_name
from cleanroom.workspaces._readiness import WorkspaceAssessment, assess_dataset, latest_snapshot
from cleanroom.workspaces.lifecycle import (
    Event,
    Observed,
    Plan,
    audit_transitions,
    denied_users,
    job_failed,
    job_succeeded,
    parse_duration,
    plan_workspace,
    ready_events,
    refused,
    snapshot_not_found,
    with_grant,
)
from cleanroom.workspaces.manifests import (
    NAMESPACE_DEFAULT_DENY,
    PSA_LABELS,
    WorkspaceRef,
    build_namespace_guards,
    build_notebook_network_policy,
    build_notebook_pod,
)
from cleanroom.workspaces.settings import WorkspaceSettings, load_settings

__all__ = [
    "NAMESPACE_DEFAULT_DENY",
    "PSA_LABELS",
    "Event",
    "Observed",
    "Plan",
    "WorkspaceAssessment",
    "WorkspaceRef",
    "WorkspaceSettings",
    "assess_dataset",
    "audit_transitions",
    "build_namespace_guards",
    "build_notebook_network_policy",
    "build_notebook_pod",
    "denied_users",
    "job_failed",
    "job_succeeded",
    "latest_snapshot",
    "load_settings",
    "object_name",
    "parse_duration",
    "plan_workspace",
    "ready_events",
    "refused",
    "snapshot_not_found",
    "with_grant",
]
