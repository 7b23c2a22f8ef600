"""The egress self-check: a short-lived pod under the notebook's labels (so the notebook's NetworkPolicies
apply to it) tries the routes data could leave by. EgressRestricted is True only when every try failed.

A CNI that ignores NetworkPolicies is common (many clusters ship one), and a policy nobody enforces is
no protection; this check is how a workspace finds out. Pure: builds the pod and judges its report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cleanroom.api import Condition
from cleanroom.workspaces import manifests
from cleanroom.workspaces.settings import WorkspaceSettings

EGRESS_RESTRICTED = "EgressRestricted"
PROBE_LABEL = "cleanroom.dev/egress-probe"
# What the probe tries, in the order it reports: name, host, port (DNS is a lookup, not a connection).
PROBE_ROUTES = (
    ("internet", "1.1.1.1", 443),
    ("cloud-metadata", "169.254.169.254", 80),
    ("kubernetes-api", "$KUBERNETES_SERVICE_HOST", 443),
    ("dns", "example.org", 53),
)


def build_probe_pod(ref: manifests.WorkspaceRef, settings: WorkspaceSettings) -> dict[str, Any]:
    labels = {**manifests.labels(ref, "notebook"), PROBE_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": manifests.object_name(ref.name, "egress-probe"),
            "namespace": ref.namespace,
            "labels": labels,
            "ownerReferences": [manifests.owner_reference(ref)],
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            **manifests.placement(settings),
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 120,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": settings.run_as_user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": settings.egress_probe_image,
                    "args": ["egress-probe"],
                    "terminationMessagePolicy": "File",
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"cpu": "100m", "memory": "64Mi"},
                    },
                    "securityContext": manifests.hardened_container_security(),
                }
            ],
        },
    }


def judge_probe(pod: Mapping[str, Any] | None) -> Condition:
    """The EgressRestricted condition from the probe pod's report (its termination message)."""
    if pod is None:
        return Condition(EGRESS_RESTRICTED, "Unknown", "ProbePending", "the egress probe has not run yet")
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        terminated = (status.get("state") or {}).get("terminated")
        if not terminated:
            continue
        try:
            report = json.loads(terminated.get("message") or "")
            reached = [str(route) for route in report["reached"]]
        except (ValueError, KeyError, TypeError):
            return Condition(
                EGRESS_RESTRICTED,
                "Unknown",
                "ProbeFailed",
                "the egress probe ended without a readable report",
            )
        if reached:
            return Condition(
                EGRESS_RESTRICTED,
                "False",
                "EgressReachable",
                f"the probe under this workspace's policies reached: {', '.join(reached)}. The cluster's network "
                "plugin does not enforce NetworkPolicies; do not put data here until it does",
            )
        tried = ", ".join(str(route) for route in report.get("blocked", ()))
        return Condition(
            EGRESS_RESTRICTED, "True", "AllRoutesBlocked", f"the probe reached nothing ({tried})"
        )
    return Condition(EGRESS_RESTRICTED, "Unknown", "ProbeRunning", "the egress probe is running")
