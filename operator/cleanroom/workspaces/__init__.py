"""Pure builders and decisions for Workspaces: spec (+ Dataset status) in, conditions and manifests out."""

from cleanroom.workspaces.lifecycle import (
    DATASET_MOUNTED,
    EGRESS_RESTRICTED,
    EXPIRED,
    LAST_ACTIVITY_ANNOTATION,
    SCHEDULED,
    Event,
    Observed,
    Plan,
    audit_transitions,
    denied_users,
    job_succeeded,
    parse_duration,
    plan_workspace,
    refused,
)
from cleanroom.workspaces.manifests import (
    NAMESPACE_DEFAULT_DENY,
    PSA_LABELS,
    WorkspaceRef,
    build_namespace_guards,
    build_notebook_network_policy,
    build_notebook_pod,
    object_name,
)
from cleanroom.workspaces.readiness import READY, WorkspaceAssessment, assess_dataset, latest_snapshot
from cleanroom.workspaces.settings import WorkspaceSettings, load_settings

__all__ = [
    "DATASET_MOUNTED",
    "EGRESS_RESTRICTED",
    "EXPIRED",
    "LAST_ACTIVITY_ANNOTATION",
    "NAMESPACE_DEFAULT_DENY",
    "PSA_LABELS",
    "READY",
    "SCHEDULED",
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
    "job_succeeded",
    "latest_snapshot",
    "load_settings",
    "object_name",
    "parse_duration",
    "plan_workspace",
    "refused",
]
