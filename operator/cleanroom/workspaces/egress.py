"""The egress self-check: a short-lived pod under the notebook's labels (so the notebook's NetworkPolicies
apply to it) tries the routes data could leave by. EgressRestricted is True only when every try failed.

A CNI that ignores NetworkPolicies is common (many clusters ship one), and a policy nobody enforces is
no protection; this check is how a workspace finds out. Pure: builds the pod and judges its report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from cleanroom.api import Condition
from cleanroom.api.contract import EGRESS_RESTRICTED, PROBE_LABEL, object_name
from cleanroom.workspaces import manifests
from cleanroom.workspaces.settings import WorkspaceSettings

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
            "name": object_name(ref.name, "egress-probe"),
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
        settled = report.get("settledAfter")
        # A plugin that took a moment to program the new pod's policies is worth saying: a notebook
        # starting on that node is open for as long.
        took = (
            f"; the policies held after {settled} s" if isinstance(settled, int | float) and settled else ""
        )
        return Condition(
            EGRESS_RESTRICTED, "True", "AllRoutesBlocked", f"the probe reached nothing ({tried}){took}"
        )
    return Condition(EGRESS_RESTRICTED, "Unknown", "ProbeRunning", "the egress probe is running")


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions, as NetworkPolicy's podSelector) matches."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, operator, values = (
            expression.get("key"),
            expression.get("operator"),
            expression.get("values") or (),
        )
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def widening_policies(
    policies: Iterable[Mapping[str, Any]], pod_labels: Mapping[str, str], own_names: Iterable[str]
) -> tuple[str, ...]:
    """Names of NetworkPolicies that are not the workspace's own and open a way in or out of its notebook.

    NetworkPolicies add up: a pod may reach whatever any policy selecting it allows. So a policy anyone else
    writes (a namespace admin, a Helm chart) that selects the notebook and has one egress or ingress rule
    widens what the workspace's own policies allow; an empty rule list only denies. Ours are known by name.
    """
    own = set(own_names)
    found = []
    for policy in policies:
        metadata, spec = policy.get("metadata") or {}, policy.get("spec") or {}
        if metadata.get("name") in own or not selects(spec.get("podSelector"), pod_labels):
            continue
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if ("Egress" in types and spec.get("egress")) or ("Ingress" in types and spec.get("ingress")):
            found.append(str(metadata.get("name")))
    return tuple(sorted(found))


def widened_condition(names: tuple[str, ...]) -> Condition:
    return Condition(
        EGRESS_RESTRICTED,
        "False",
        "ForeignNetworkPolicy",
        f"NetworkPolicy {', '.join(names)} selects this workspace's notebook and opens traffic its own policies "
        "deny: the notebook is stopped until it is removed (or narrowed so it no longer selects the notebook)",
    )
