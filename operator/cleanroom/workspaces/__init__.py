"""Pure builders and decisions for Workspaces: spec (+ Dataset status) in, conditions and manifests out."""

from cleanroom.workspaces.readiness import READY, WorkspaceAssessment, assess_dataset, latest_snapshot

__all__ = ["READY", "WorkspaceAssessment", "assess_dataset", "latest_snapshot"]
