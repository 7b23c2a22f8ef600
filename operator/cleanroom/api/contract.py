"""The names cleanroom's parts agree on: labels, annotations, object names, condition types and the read
grant's variable, each defined once.

The operator writes them; the hub, the materializer, the admission policies and NetworkPolicies of the chart
(charts/cleanroom/templates) and people with kubectl read them. A name changed here changes for all of them,
so a change is an API change. Pure and standard-library only: the CLI's `--help` imports this module.
"""

from __future__ import annotations

import hashlib
import re

# -- labels ------------------------------------------------------------------------------------------------
# On a namespace the operator guards (Pod Security labels, default-deny, quota): the admission policies let
# the operator and the hub write their objects only in namespaces that carry it.
WORKSPACE_NAMESPACE_LABEL = "cleanroom.dev/workspaces"
# On every object a Workspace is made of: which Workspace and which Dataset it serves (as `label_value`s).
WORKSPACE_LABEL = "cleanroom.dev/workspace"
DATASET_LABEL = "cleanroom.dev/dataset"
# On the objects of a snapshot's one shared copy (workspaces.snapshot_volumes) and on the PersistentVolume
# made for each Workspace over it: which snapshot (its hex digest, cut to a label value).
SNAPSHOT_LABEL = "cleanroom.dev/snapshot"
# On a PersistentVolume made for one Workspace's claim: that claim's namespace and Workspace (the collector
# deletes the volume once the Workspace is gone or pins another snapshot).
CLAIM_NAMESPACE_LABEL = "cleanroom.dev/claim-namespace"
# On the egress probe's pod, beside the notebook's labels (so the notebook's NetworkPolicies select it too).
PROBE_LABEL = "cleanroom.dev/egress-probe"
# app.kubernetes.io/managed-by on what the operator applies, and app.kubernetes.io/name on a Workspace's
# objects: the operator watches its own pods and Jobs, and puts back its own NetworkPolicies, by these.
MANAGED_BY = "cleanroom"
WORKSPACE_APP = "cleanroom-workspace"

# -- annotations -------------------------------------------------------------------------------------------
# Who wrote a Workspace, as the API server authenticated them. The cleanroom admission policy (the chart's
# ValidatingAdmissionPolicy) admits a value only when it equals the request's userInfo.username, so the
# operator may trust these where the policy is installed; it never trusts spec.users for this.
CREATED_BY_ANNOTATION = "cleanroom.dev/created-by"
LAST_CHANGED_BY_ANNOTATION = "cleanroom.dev/last-changed-by"
# The user who last set spec.running to true: the requester itself, or the user the hub signed in (only
# the hub's account may write another name here).
STARTED_BY_ANNOTATION = "cleanroom.dev/started-by"
# Who asked for an ExportRequest: the admission policy admits only the request's own user name, or (from the
# hub's account) the user the hub signed in; it can never change.
REQUESTED_BY_ANNOTATION = "cleanroom.dev/requested-by"
# On the notebook pod: the snapshot it mounts, and the Workspace's stated purpose (for people and audit).
SNAPSHOT_ANNOTATION = "cleanroom.dev/snapshot"
PURPOSE_ANNOTATION = "cleanroom.dev/purpose"
# On a Workspace: when the hub last saw its user active (idle culling counts from here).
LAST_ACTIVITY_ANNOTATION = "cleanroom.dev/last-activity"

# -- condition types ---------------------------------------------------------------------------------------
# Ready on Datasets and Workspaces (`kubectl wait --for=condition=Ready`); the next three on Workspaces;
# Expired on Workspaces and ExportRequests.
READY = "Ready"
SCHEDULED = "Scheduled"
DATASET_MOUNTED = "DatasetMounted"
EGRESS_RESTRICTED = "EgressRestricted"
EXPIRED = "Expired"
# On ExportRequests, one for each step of the airlock (`kubectl wait --for=condition=Released`).
QUARANTINED = "Quarantined"
CHECKED = "Checked"
APPROVED = "Approved"
RELEASED = "Released"
REJECTED = "Rejected"

# -- security officers ------------------------------------------------------------------------------------
# The role (a value of the provider's role claim) that opens the audit service's trail to a security officer.
SECURITY_OFFICER_ROLE = "security-officer"
# The group (as the API server and the provider's groups claim name it) whose members decide on exports as
# SecurityOfficer, unless the chart's exports.securityOfficerGroup names another: the admission policy, the
# operator and the exports page read that one value. An officer who decides on the page holds both.
DEFAULT_SECURITY_OFFICER_GROUP = "cleanroom:security-officers"

# -- the materializer's read grant -------------------------------------------------------------------------
# Where the materializer finds its grant URL: this variable, filled from this key of the workspace's reader
# Secret (never a command line, which any process on the node may read).
GRANT_URL_VARIABLE = "CLEANROOM_SNAPSHOT_GRANT_URL"
GRANT_URL_KEY = "grantUrl"
# A Dataset's ingest shard pods: the grant URL of their run (presigned reads and an upload policy scoped to
# the run's prefix) and the de-identification key, from the run's Secret (ds-<dataset>-ingest); the pod's
# shard from the Indexed Job's JOB_COMPLETION_INDEX.
INGEST_GRANT_VARIABLE = "CLEANROOM_INGEST_GRANT_URL"
INGEST_KEY_VARIABLE = "CLEANROOM_INGEST_DEID_KEY"
INGEST_TABLE_VARIABLE = "CLEANROOM_INGEST_PSEUDONYM_TABLE"
INGEST_KEY_KEY = "deidKey"
INGEST_TABLE_KEY = "pseudonymTable"
INGEST_RUN_LABEL = "cleanroom.dev/ingest-run"

# -- object names ------------------------------------------------------------------------------------------
_DNS_LABEL = 63
SERVER_NAME_MAX_LENGTH = 30
_SERVER_HASH = 6


def object_name(workspace: str, suffix: str = "") -> str:
    """A DNS-1035 label (at most 63 characters) for an object of ``workspace``; long names get a hash."""
    base = f"ws-{workspace}" + (f"-{suffix}" if suffix else "")
    if len(base) <= _DNS_LABEL:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = _DNS_LABEL - len(digest) - 1 - (len(suffix) + 1 if suffix else 0)
    return f"ws-{workspace}"[:keep].rstrip("-") + f"-{digest}" + (f"-{suffix}" if suffix else "")


def ingest_object_name(dataset: str, suffix: str) -> str:
    """A DNS-1035 label for an object of ``dataset``'s ingest (its Job, Secret, NetworkPolicy): ds-<name>-<suffix>,
    long names cut and hashed as ``object_name`` does."""
    base = f"ds-{dataset}-{suffix}"
    if len(base) <= _DNS_LABEL:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = _DNS_LABEL - len(digest) - 1 - len(suffix) - 1
    return f"ds-{dataset}"[:keep].rstrip("-") + f"-{digest}-{suffix}"


def snapshot_object_name(dataset: str, digest: str, suffix: str = "") -> str:
    """A DNS-1035 label for an object of the one shared copy of ``dataset``'s snapshot ``digest`` (its claim,
    materializer Job, reader Secret, NetworkPolicy): snap-<hash of dataset and digest>[-suffix]."""
    digest_of_both = hashlib.sha256(f"{dataset}/{digest}".encode()).hexdigest()[:16]
    return f"snap-{digest_of_both}" + (f"-{suffix}" if suffix else "")


def snapshot_volume_name(namespace: str, workspace: str, dataset: str, digest: str) -> str:
    """The name of the PersistentVolume (cluster-scoped) made for one Workspace's claim over a shared copy."""
    claim = hashlib.sha256(f"{namespace}/{workspace}".encode()).hexdigest()[:12]
    return f"{snapshot_object_name(dataset, digest)}-{claim}"


def hub_env_secret_name(workspace: str) -> str:
    """The Secret the hub writes a session's settings into, which the notebook reads as its environment."""
    return object_name(workspace, "hub")


def label_value(name: str) -> str:
    """``name`` as a label value: itself when it fits in 63 characters, else a prefix and a hash of the whole.
    A cut alone could end on a dot or hyphen, which a label value may not (a Dataset name may have 253
    characters and dots; a Workspace name is held to 63 and no dots by its CRD)."""
    if len(name) <= _DNS_LABEL:
        return name
    return name[:54].rstrip("-.") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def server_name(namespace: str, name: str) -> str:
    """A Workspace's JupyterHub server name.

    JupyterHub 6 accepts only safe slugs as server names (1-30 lowercase letters, digits and single hyphens,
    starting with a letter), and one user may reach Workspaces of the same name in several namespaces. So
    the server name is a readable prefix of the Workspace name plus a hash of `namespace/name`: stable,
    unique, and computed the same way by the operator (for `status.url`) and the hub."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:_SERVER_HASH]
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not readable or not readable[0].isalpha():
        readable = "w" + (f"-{readable}" if readable else "")
    readable = readable[: SERVER_NAME_MAX_LENGTH - _SERVER_HASH - 1].rstrip("-")
    return f"{readable}-{digest}"


__all__ = [
    "APPROVED",
    "CHECKED",
    "CLAIM_NAMESPACE_LABEL",
    "CREATED_BY_ANNOTATION",
    "DATASET_LABEL",
    "DATASET_MOUNTED",
    "DEFAULT_SECURITY_OFFICER_GROUP",
    "EGRESS_RESTRICTED",
    "EXPIRED",
    "GRANT_URL_KEY",
    "GRANT_URL_VARIABLE",
    "INGEST_GRANT_VARIABLE",
    "INGEST_KEY_KEY",
    "INGEST_KEY_VARIABLE",
    "INGEST_RUN_LABEL",
    "INGEST_TABLE_KEY",
    "INGEST_TABLE_VARIABLE",
    "LAST_ACTIVITY_ANNOTATION",
    "LAST_CHANGED_BY_ANNOTATION",
    "MANAGED_BY",
    "PROBE_LABEL",
    "PURPOSE_ANNOTATION",
    "QUARANTINED",
    "READY",
    "REJECTED",
    "RELEASED",
    "REQUESTED_BY_ANNOTATION",
    "SCHEDULED",
    "SECURITY_OFFICER_ROLE",
    "SERVER_NAME_MAX_LENGTH",
    "SNAPSHOT_ANNOTATION",
    "SNAPSHOT_LABEL",
    "STARTED_BY_ANNOTATION",
    "WORKSPACE_APP",
    "WORKSPACE_LABEL",
    "WORKSPACE_NAMESPACE_LABEL",
    "hub_env_secret_name",
    "ingest_object_name",
    "label_value",
    "object_name",
    "server_name",
    "snapshot_object_name",
    "snapshot_volume_name",
]
