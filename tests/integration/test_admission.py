"""The chart's admission policies and RBAC on the real API server, attacked as the accounts they hold.

The chart is rendered (helm template) under a release of this module's own, and its ServiceAccounts, RBAC
and ValidatingAdmissionPolicies are applied; the attacker acts through impersonation (kubectl --as), as the
operator's or the hub's service account would after a compromise, or as a user of another team. Each attack
is first refused, with the policy's reason; then the binding that refused it is removed and the same attack
succeeds, so a test that passes is a protection that holds."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.integration.conftest import CACHE, ROOT, VERSIONS, Kubectl, OperatorProcess
from tests.integration.test_workspaces import (  # noqa: F401
    EVERY_NAMESPACE,
    condition,
    dataset,
    owned,
    workspace,
)

HELM = str(CACHE / f"bin/helm-{VERSIONS['HELM_VERSION']}/helm")
KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# The namespaces whose Workspaces this module's copy of the Workspace-writers policy covers: the chart's
# binding covers every namespace, which would refuse other suites' Workspaces running at the same time.
SCOPE_LABEL = "cleanroom-test/admission"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    full: str
    workspaces: str  # a namespace the operator guards (labelled cleanroom.dev/workspaces=true)
    objects: tuple[dict[str, Any], ...]

    @property
    def operator(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.full}-operator"

    @property
    def hub(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.full}-hub"


def render(release: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [HELM, "template", release, str(ROOT / "charts/cleanroom"), "-n", namespace,
         "--kube-version", VERSIONS["K8S_VERSION"].lstrip("v"), *values],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in KINDS]


@pytest.fixture(scope="module")
def release(kubectl: Kubectl) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    name, namespace, guarded = f"adm{suffix}", f"adm-{suffix}", f"adm-ws-{suffix}"
    kubectl.run("create", "namespace", namespace)
    kubectl.run("create", "namespace", guarded)
    # As the operator leaves a namespace it guards, less the Pod Security label: the policies are the
    # protection under test, not Pod Security admission.
    kubectl.run("label", "namespace", guarded, "cleanroom.dev/workspaces=true", f"{SCOPE_LABEL}={name}")
    objects = render(name, namespace)
    for item in objects:
        if item["kind"] == "ValidatingAdmissionPolicyBinding" and item["metadata"]["name"].endswith(
            ("workspace-writers", "workspace-volumes")
        ):
            item["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE_LABEL: name}}}
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objects})
    full = f"{name}-cleanroom"
    # Policies take effect a moment after they are created: wait until the first refusal is seen.
    probe = secret("probe", namespace)
    for _ in range(60):
        result = kubectl.apply(
            probe, "--as", f"system:serviceaccount:{namespace}:{full}-hub", "--dry-run=server", check=False
        )
        if result.returncode != 0 and "ValidatingAdmissionPolicy" in result.stderr:
            break
        time.sleep(0.5)
    yield Release(name, namespace, full, guarded, tuple(objects))
    for item in objects:
        if item["kind"] in CLUSTER_SCOPED:
            kubectl.run("delete", item["kind"], item["metadata"]["name"], "--ignore-not-found", check=False)
    kubectl.run("delete", "namespace", namespace, guarded, "--wait=false", check=False)


def as_account(
    kubectl: Kubectl, account: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return kubectl.run(*args, "--as", account, stdin=stdin, check=False)


def create_as(kubectl: Kubectl, account: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return as_account(kubectl, account, "create", "-f", "-", stdin=yaml.safe_dump(manifest))


@contextmanager
def without_binding(kubectl: Kubectl, release: Release, policy: str) -> Iterator[None]:
    """The protection removed: the policy's binding is deleted for the duration, then put back."""
    binding = next(
        o for o in release.objects
        if o["kind"] == "ValidatingAdmissionPolicyBinding" and o["metadata"]["name"] == f"{release.full}-{policy}"
    )  # fmt: skip
    kubectl.run("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    try:
        yield
    finally:
        kubectl.apply(binding)
        # The API server's policy informer takes a moment to see the binding again (several seconds here);
        # the next test's attack must meet it.
        time.sleep(10)


def eventually(attempt: Any, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``attempt`` until it succeeds (a deleted binding stops applying within a second or two)."""
    deadline = time.monotonic() + timeout
    while True:
        result: subprocess.CompletedProcess[str] = attempt()
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode != 0, f"the API server admitted it:\n{result.stdout}"
    assert words in result.stderr, result.stderr


def secret(name: str, namespace: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "stringData": {"signing-key.pem": "attacker's key"},
    }


def cleanroom_pod(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A pod of cleanroom's own shape (it passes every rule), with ``spec`` changed by the attacker."""
    labels = {"app.kubernetes.io/managed-by": "cleanroom", "app.kubernetes.io/name": "cleanroom-workspace"}
    container = {
        "name": "c",
        "image": "registry.example.org/cleanroom/operator:0.1.0",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        },
    }
    body["spec"].update(spec)
    return body


def test_a_pod_of_cleanroom_shape_is_admitted_for_the_operator(kubectl: Kubectl, release: Release) -> None:
    # The baseline the attacks below change one thing of: without it a refusal could have any cause.
    result = create_as(kubectl, release.operator, cleanroom_pod("shaped", release.workspaces))
    assert result.returncode == 0, result.stderr


def test_the_operator_is_refused_a_hostpath_pod(kubectl: Kubectl, release: Release) -> None:
    attack = cleanroom_pod(
        "rootfs",
        release.workspaces,
        volumes=[{"name": "host", "hostPath": {"path": "/"}}],
    )
    refused(create_as(kubectl, release.operator, attack), "no hostPath")
    with without_binding(kubectl, release, "operator-pods"):
        assert eventually(lambda: create_as(kubectl, release.operator, attack)).returncode == 0


def test_the_operator_is_refused_a_pod_with_another_service_account(
    kubectl: Kubectl, release: Release
) -> None:
    kubectl.run("create", "serviceaccount", "deployer", "-n", release.workspaces)
    attack = cleanroom_pod("borrowed", release.workspaces, serviceAccountName="deployer")
    refused(create_as(kubectl, release.operator, attack), "default service account")
    token = cleanroom_pod("token", release.workspaces, automountServiceAccountToken=True)
    # The token's projected volume (the ServiceAccount admission plugin adds it) is what gives it away first.
    refused(create_as(kubectl, release.operator, token), "no Secret or projected volumes")
    with without_binding(kubectl, release, "operator-pods"):
        assert eventually(lambda: create_as(kubectl, release.operator, attack)).returncode == 0


def test_the_operator_is_refused_a_privileged_or_foreign_image_pod(
    kubectl: Kubectl, release: Release
) -> None:
    privileged = cleanroom_pod("priv", release.workspaces)
    # (A privileged container must allow escalation, or the API server refuses the spec before admission.)
    privileged["spec"]["containers"][0]["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True
    )
    refused(create_as(kubectl, release.operator, privileged), "Pod Security restricted")
    foreign = cleanroom_pod("miner", release.workspaces)
    foreign["spec"]["containers"][0]["image"] = "docker.io/someone/miner:latest"
    refused(create_as(kubectl, release.operator, foreign), "runs only its own image")
    mounted = cleanroom_pod("mounted", release.workspaces)
    mounted["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "audit-signing-key"}}]
    refused(create_as(kubectl, release.operator, mounted), "read no Secret but their Workspace's own")


def test_the_operator_and_the_hub_are_refused_a_secret_elsewhere(kubectl: Kubectl, release: Release) -> None:
    # The audit signing key's place: the release namespace, which the operator does not guard.
    key = secret(
        "cleanroom-audit-signing-key", release.namespace, labels={"app.kubernetes.io/managed-by": "cleanroom"}
    )
    refused(create_as(kubectl, release.operator, key), "in namespaces it guards")
    refused(create_as(kubectl, release.hub, key), "only Workspaces' session Secrets")
    # In a guarded namespace, a Secret that is not a session's is refused to the hub too.
    grant = secret("ws-x-reader", release.workspaces)
    refused(create_as(kubectl, release.hub, grant), "only Workspaces' session Secrets")
    with without_binding(kubectl, release, "hub"):
        assert eventually(lambda: create_as(kubectl, release.hub, key)).returncode == 0


def test_the_operator_is_refused_a_namespace_relabelled_privileged(
    kubectl: Kubectl, release: Release
) -> None:
    def relabel(value: str) -> subprocess.CompletedProcess[str]:
        return as_account(
            kubectl, release.operator, "label", "namespace", release.workspaces,
            f"pod-security.kubernetes.io/enforce={value}", "--overwrite",
        )  # fmt: skip

    refused(relabel("privileged"), "only its own namespace labels")
    assert relabel("restricted").returncode == 0  # its own label is allowed
    refused(
        as_account(kubectl, release.operator, "label", "namespace", release.namespace, "cleanroom.dev/x=1"),
        "no system namespace and not its own",
    )
    # The hub may not label namespaces at all (RBAC).
    refused(
        as_account(kubectl, release.hub, "label", "namespace", release.workspaces, "a=b"),
        "forbidden",
    )
    with without_binding(kubectl, release, "operator-namespaces"):
        assert eventually(lambda: relabel("privileged")).returncode == 0


def test_the_hub_is_refused_pods_of_any_kind(kubectl: Kubectl, release: Release) -> None:
    hostpath = cleanroom_pod(
        "hub-root", release.workspaces, volumes=[{"name": "h", "hostPath": {"path": "/"}}]
    )
    refused(create_as(kubectl, release.hub, hostpath), "forbidden")
    borrowed = cleanroom_pod("hub-sa", release.workspaces, serviceAccountName="default")
    refused(create_as(kubectl, release.hub, borrowed), "forbidden")


def guarded_workspace(release: Release, name: str, creator: str) -> dict[str, Any]:
    body = workspace(name, "no-such-dataset", running=False)
    body["metadata"] = {
        "name": name,
        "namespace": release.workspaces,
        "annotations": {"cleanroom.dev/created-by": creator},
    }
    return body


def test_the_hub_and_the_operator_are_refused_a_patch_of_spec_users(
    kubectl: Kubectl, release: Release
) -> None:
    kubectl.run(
        "create", "-f", "-", stdin=yaml.safe_dump(guarded_workspace(release, "theirs", kubectl_user(kubectl)))
    )
    # Each attack passes the Workspace-writers policy (the operator names itself as the changer; the hub
    # leaves the annotation as it is), so the refusal is the account's own policy. Were both policies to
    # deny, which message comes back would depend on the API server's order of evaluation.
    users = json.dumps(
        {
            "metadata": {"annotations": {"cleanroom.dev/last-changed-by": release.operator}},
            "spec": {"users": ["mallory@elsewhere.example"]},
        }
    )
    hub_users = json.dumps({"spec": {"users": ["mallory@elsewhere.example"]}})

    def patch(account: str, body: str = users) -> subprocess.CompletedProcess[str]:
        return as_account(
            kubectl,
            account,
            "patch",
            "workspace",
            "theirs",
            "-n",
            release.workspaces,
            "--type=merge",
            "-p",
            body,
        )

    refused(patch(release.hub, hub_users), "only spec.running")
    refused(patch(release.operator), "only stops a Workspace")
    # What each may do passes: the hub starts it for a user, the operator stops it.
    start = {
        "metadata": {"annotations": {"cleanroom.dev/started-by": "alice@hospital.example"}},
        "spec": {"running": True},
    }
    assert patch(release.hub, json.dumps(start)).returncode == 0
    stop = {
        "metadata": {"annotations": {"cleanroom.dev/last-changed-by": release.operator}},
        "spec": {"running": False},
    }
    assert patch(release.operator, json.dumps(stop)).returncode == 0
    with without_binding(kubectl, release, "hub"):
        assert eventually(lambda: patch(release.hub, hub_users)).returncode == 0


def kubectl_user(kubectl: Kubectl) -> str:
    review = json.loads(kubectl.run("auth", "whoami", "-o", "json").stdout)
    return str(review["status"]["userInfo"]["username"])


def test_who_created_a_workspace_comes_from_the_api_server(kubectl: Kubectl, release: Release) -> None:
    """Mallory, who may write Workspaces in the namespace, cannot claim to be alice, and every change of
    spec names the requester."""
    mallory = "mallory@elsewhere.example"
    kubectl.run(
        "create",
        "role",
        "ws-writer",
        "-n",
        release.workspaces,
        "--verb=create,get,patch",
        "--resource=workspaces.cleanroom.dev",
    )
    kubectl.run(
        "create", "rolebinding", "mallory", "-n", release.workspaces, "--role=ws-writer", f"--user={mallory}"
    )
    body = guarded_workspace(release, "forged", "alice@hospital.example")
    refused(create_as(kubectl, mallory, body), f'your user name, "{mallory}"')
    body["metadata"]["annotations"]["cleanroom.dev/started-by"] = "alice@hospital.example"
    body["metadata"]["annotations"]["cleanroom.dev/created-by"] = mallory
    refused(create_as(kubectl, mallory, body), "may only name you")
    del body["metadata"]["annotations"]["cleanroom.dev/started-by"]
    assert create_as(kubectl, mallory, body).returncode == 0
    hijack = json.dumps({"spec": {"users": [mallory]}})
    refused(
        as_account(
            kubectl,
            mallory,
            "patch",
            "workspace",
            "forged",
            "-n",
            release.workspaces,
            "--type=merge",
            "-p",
            hijack,
        ),
        "last-changed-by to your user name",
    )
    forged = guarded_workspace(release, "forged-2", "alice@hospital.example")
    with without_binding(kubectl, release, "workspace-writers"):
        assert eventually(lambda: create_as(kubectl, mallory, forged)).returncode == 0


def test_another_teams_workspace_gets_nothing_and_says_why(
    dataset: str,  # noqa: F811
    operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    """The issue's attack: someone with write access to Workspaces in another team's namespace names a
    Dataset and one of its users. The Dataset admits only its project's namespaces."""
    admitted = f"{namespace}-project"
    kubectl.run("create", "namespace", admitted)
    try:
        access = {"namespaces": {"names": [admitted], "selector": None}}
        kubectl.run(
            "patch", "dataset", dataset, "--type=merge", "-p", json.dumps({"spec": {"access": access}})
        )
        kubectl.apply(workspace("intruder", dataset), "-n", namespace)
        body = kubectl.wait_for(
            lambda w: condition(w, "Ready").get("reason") == "AccessDenied",
            "workspace",
            "intruder",
            "-n",
            namespace,
        )
        assert (
            f"namespace {namespace} is not one that Dataset {dataset} admits"
            in condition(body, "Ready")["message"]
        )
        assert body["status"]["createdBy"] == kubectl_user(kubectl)
        assert owned(kubectl, namespace, "intruder") == []
        # Not even the namespace guards or a read grant: nothing of the operator's lands there.
        leftovers = kubectl.get("secrets,pvc,jobs,pods,networkpolicies,resourcequotas", "-n", namespace)[
            "items"
        ]
        assert leftovers == []
        assert "cleanroom.dev/workspaces" not in kubectl.get("namespace", namespace)["metadata"].get(
            "labels", {}
        )
        # The same Workspace in the project's namespace is built: the refusal was the namespace's.
        kubectl.apply(workspace("member", dataset), "-n", admitted)
        kubectl.wait_for(
            lambda w: condition(w, "DatasetMounted").get("status") == "True",
            "workspace",
            "member",
            "-n",
            admitted,
            timeout=120,
        )
    finally:
        every = {"names": None, "selector": EVERY_NAMESPACE}
        kubectl.run(
            "patch",
            "dataset",
            dataset,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"access": {"namespaces": every}}}),
        )
        kubectl.run("delete", "namespace", admitted, "--wait=false", check=False)


def test_namespaced_rbac_grants_writes_only_where_workspaces_live(kubectl: Kubectl) -> None:
    """With workspaces.namespaces set, the operator's and hub's writes are RoleBindings there only."""
    objects = render("rbacns", "cleanroom-system", "--set", "workspaces.namespaces={team-a}")
    bindings = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in objects
        if o["kind"].endswith("Binding")
    }
    assert ("RoleBinding", "team-a", "rbacns-cleanroom-operator-workspaces") in bindings
    assert ("RoleBinding", "team-a", "rbacns-cleanroom-hub-sessions") in bindings
    assert not any(
        kind == "ClusterRoleBinding" and name.endswith(("-workspaces", "-sessions"))
        for kind, _, name in bindings
    )
    writes = next(
        o
        for o in objects
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "rbacns-cleanroom-operator"
    )
    assert not any(
        {"create", "delete"} & set(rule["verbs"]) and {"pods", "secrets", "jobs"} & set(rule["resources"])
        for rule in writes["rules"]
    )


def test_a_tenant_is_refused_a_workspace_data_claim_made_before_the_operators(
    kubectl: Kubectl, release: Release
) -> None:
    """A modeller with claim rights in a guarded namespace makes ws-<name>-data first (restored from another
    Workspace's claim, say): the operator would take it as the Workspace's and mount it as /data. Refused by
    workspace-volumes; admitted without it; a claim of another name is hers to make."""
    tenant = f"tenant-{release.name}@hospital.example"
    kubectl.run("-n", release.workspaces, "create", "role", "claims", "--verb=create,delete",
                "--resource=persistentvolumeclaims")  # fmt: skip
    kubectl.run(
        "-n", release.workspaces, "create", "rolebinding", "claims", "--role=claims", f"--user={tenant}"
    )

    def claim(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": release.workspaces},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
                "dataSource": {"kind": "PersistentVolumeClaim", "name": "ws-other-data"},
            },
        }

    refused(
        create_as(kubectl, tenant, claim("ws-seg-data")), "only the operator makes a Workspace data volume"
    )
    assert create_as(kubectl, tenant, claim("my-scratch")).returncode == 0
    with without_binding(kubectl, release, "workspace-volumes"):
        assert eventually(lambda: create_as(kubectl, tenant, claim("ws-seg-data"))).returncode == 0
    kubectl.run(
        "-n", release.workspaces, "delete", "pvc", "ws-seg-data", "my-scratch", "--wait=false", check=False
    )
