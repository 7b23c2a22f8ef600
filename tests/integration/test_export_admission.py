"""The airlock's admission half on the real API server: who asked for an export and who decided on it are
the API server's own names for them, the requester never decides, and a decision is never changed.

The chart is rendered under a release of this module's own and its export policies are applied, bound to
this module's namespace only. People act through impersonation (kubectl --as, --as-group) with a Role
that lets them write ExportRequests there, as a team's RBAC would; the hub and the operator act as their
service accounts. Each attack is refused with the policy's reason; then the binding is removed and the
same attack succeeds, so a passing test is a protection that holds."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.integration.conftest import ROOT, Kubectl
from tests.integration.test_admission import eventually, refused, render

SCOPE_LABEL = "cleanroom-test/export-admission"
OFFICERS = "cleanroom:security-officers"
STEWARDS = "prostate-stewards"
ALICE, BOB, OLGA, MALLORY = (
    "alice@hospital.example",
    "bob@hospital.example",
    "olga@hospital.example",
    "mallory@elsewhere.example",
)


@dataclass(frozen=True)
class Release:
    namespace: str  # where the ExportRequests live (this module's bindings select it only)
    operator: str
    hub: str
    bindings: dict[str, dict[str, Any]]
    # A release installed cluster-wide (make dev's) whose export policies cover this namespace too: the
    # refusals are then checked against its accounts, and a removed binding of ours removes no protection.
    deployed: bool = False


def deployed_accounts(kubectl: Kubectl) -> tuple[str, str] | None:
    """The operator's and the hub's accounts of a release whose export-writers binding covers every
    namespace, read from its policies; None when there is none."""
    bindings = kubectl.get("validatingadmissionpolicybindings")["items"]
    wide = [
        b
        for b in bindings
        if b["spec"]["policyName"].endswith("-export-writers") and not b["spec"].get("matchResources")
    ]
    if not wide:
        return None
    name = wide[0]["spec"]["policyName"].removesuffix("-export-writers")
    writers = kubectl.get("validatingadmissionpolicy", f"{name}-export-writers")["spec"]["variables"]
    hub = re.findall(r'"([^"]+)"', next(v["expression"] for v in writers if v["name"] == "hub"))
    operator = kubectl.get("validatingadmissionpolicy", f"{name}-operator-exports")["spec"]["matchConditions"]
    return re.findall(r'"([^"]+)"', operator[0]["expression"])[0], (hub or [""])[0]


@pytest.fixture(scope="module")
def release(kubectl: Kubectl) -> Iterator[Release]:
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds/cleanroom.dev_exportrequests.yaml"))
    kubectl.run("wait", "--for=condition=Established", "crd/exportrequests.cleanroom.dev", "--timeout=60s")
    suffix = uuid.uuid4().hex[:6]
    name, system, namespace = f"xra{suffix}", f"xra-{suffix}", f"xra-ws-{suffix}"
    kubectl.run("create", "namespace", system)
    kubectl.run("create", "namespace", namespace)
    kubectl.run("label", "namespace", namespace, f"{SCOPE_LABEL}={name}")
    full = f"{name}-cleanroom"
    wanted = {f"{full}-export-writers", f"{full}-operator-exports", f"{full}-hub"}
    objects = [
        o for o in render(name, system) if o["metadata"]["name"] in wanted or o["kind"] == "ServiceAccount"
    ]
    bindings = {}
    for item in objects:
        if item["kind"] == "ValidatingAdmissionPolicyBinding":
            item["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE_LABEL: name}}}
            bindings[item["metadata"]["name"].removeprefix(f"{full}-")] = item
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objects})
    deployed = deployed_accounts(kubectl)
    operator, hub = deployed or (
        f"system:serviceaccount:{system}:{full}-operator",
        f"system:serviceaccount:{system}:{full}-hub",
    )
    # People and the two accounts may write ExportRequests here (RBAC); admission is what is under test.
    kubectl.run("create", "role", "exports", "-n", namespace, "--verb=create,get,patch,update",
                "--resource=exportrequests.cleanroom.dev")  # fmt: skip
    accounts = [f"--serviceaccount={a.split(':')[2]}:{a.split(':')[3]}" for a in (operator, hub)]
    kubectl.run("create", "rolebinding", "exports", "-n", namespace, "--role=exports",
                *(f"--user={u}" for u in (ALICE, BOB, OLGA, MALLORY)), *accounts)  # fmt: skip
    created = Release(namespace, operator, hub, bindings, deployed=deployed is not None)
    # Policies take effect a moment after they are created: wait until the first refusal is seen.
    for _ in range(60):
        probe = create(kubectl, created, "probe", ALICE, as_user=MALLORY, dry_run=True)
        if probe.returncode != 0 and "ValidatingAdmissionPolicy" in probe.stderr:
            break
        time.sleep(0.5)
    yield created
    for item in objects:
        if item["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            kubectl.run("delete", item["kind"], item["metadata"]["name"], "--ignore-not-found", check=False)
    kubectl.run("delete", "namespace", system, namespace, "--wait=false", check=False)


def export_request(name: str, requested_by: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "ExportRequest",
        "metadata": {"name": name, "annotations": {"cleanroom.dev/requested-by": requested_by}},
        "spec": {
            "workspace": "segmentation",
            "files": ["results/metrics.csv"],
            "justification": "Aggregate Dice scores per fold for the paper's table 2",
            **spec,
        },
    }


def create(
    kubectl: Kubectl, release: Release, name: str, requested_by: str, *, as_user: str,
    groups: tuple[str, ...] = (), dry_run: bool = False, **spec: Any,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    args = ["create", "-n", release.namespace, "-f", "-", "--as", as_user]
    args += [f"--as-group={g}" for g in groups] + (["--dry-run=server"] if dry_run else [])
    return kubectl.run(*args, stdin=yaml.safe_dump(export_request(name, requested_by, **spec)), check=False)


def decide(
    kubectl: Kubectl,
    release: Release,
    name: str,
    *,
    as_user: str,
    as_groups: tuple[str, ...],
    **decision: Any,
) -> subprocess.CompletedProcess[str]:
    """Append a decision as ``as_user``, whom the API server authenticates with ``as_groups``: what
    `cleanroom export decide` sends. The decision names ``as_user`` and lists ``as_groups`` unless told."""
    entry = {"by": as_user, "groups": list(as_groups), "role": "DataSteward", "verdict": "Approve",
             "reason": "aggregate only", **decision}  # fmt: skip
    current = kubectl.get("exportrequest", name, "-n", release.namespace)
    if current["spec"].get("decisions"):
        patch = [{"op": "add", "path": "/spec/decisions/-", "value": entry}]
    else:
        patch = [{"op": "add", "path": "/spec/decisions", "value": [entry]}]
    args = ["patch", "exportrequest", name, "-n", release.namespace, "--type=json", "-p", json.dumps(patch)]
    return kubectl.run(*args, "--as", as_user, *(f"--as-group={g}" for g in as_groups), check=False)


@contextmanager
def without_binding(kubectl: Kubectl, release: Release, policy: str) -> Iterator[None]:
    if release.deployed:
        pytest.skip(
            "a release installed cluster-wide (make dev's) holds this namespace to the same policy: removing "
            "this module's binding removes no protection, so the attack cannot be seen to succeed"
        )
    binding = release.bindings[policy]
    kubectl.run("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    try:
        yield
    finally:
        kubectl.apply(binding)
        time.sleep(10)  # the API server's policy informer takes a moment to see it again


def test_the_requester_is_who_the_api_server_says(kubectl: Kubectl, release: Release) -> None:
    refused(create(kubectl, release, "forged", ALICE, as_user=MALLORY), f'your user name, "{MALLORY}"')
    assert create(kubectl, release, "own", MALLORY, as_user=MALLORY).returncode == 0
    # The hub names the user it signed in; that is its job (its own policy keeps it to creating).
    hub = create(kubectl, release, "for-alice", ALICE, as_user=release.hub)
    assert hub.returncode == 0, hub.stderr


def test_the_requester_cannot_approve_and_approvers_are_who_they_are(
    kubectl: Kubectl, release: Release
) -> None:
    assert create(kubectl, release, "paper", ALICE, as_user=ALICE).returncode == 0
    # Alice holds both roles' groups: still not on her own export.
    refused(
        decide(kubectl, release, "paper", as_user=ALICE, as_groups=(STEWARDS, OFFICERS)),
        "the requester of an export cannot decide on it",
    )
    # Mallory signs as bob; bob lists a group he is not in; bob claims to be an officer.
    refused(
        decide(kubectl, release, "paper", as_user=MALLORY, as_groups=(), by=BOB),
        "a decision names its author",
    )
    refused(
        decide(kubectl, release, "paper", as_user=BOB, as_groups=(STEWARDS,), groups=[STEWARDS, OFFICERS]),
        "only groups its author belongs to",
    )
    refused(
        decide(kubectl, release, "paper", as_user=BOB, as_groups=(STEWARDS,), role="SecurityOfficer"),
        f"needs membership of {OFFICERS}",
    )
    # What the rule allows passes: bob as steward, olga as officer.
    steward = decide(kubectl, release, "paper", as_user=BOB, as_groups=(STEWARDS,))
    assert steward.returncode == 0, steward.stderr
    # A decision once made is never changed (the CRD's own rule, whoever asks).
    changed = json.dumps([{"op": "replace", "path": "/spec/decisions/0/verdict", "value": "Reject"}])
    refused(
        kubectl.run("patch", "exportrequest", "paper", "-n", release.namespace, "--type=json", "-p", changed,
                    "--as", BOB, f"--as-group={STEWARDS}", check=False),
        "cannot be changed or removed",
    )  # fmt: skip
    assert (
        kubectl.get("exportrequest", "paper", "-n", release.namespace)["spec"]["decisions"][0]["verdict"]
        == "Approve"
    )
    officer = decide(kubectl, release, "paper", as_user=OLGA, as_groups=(OFFICERS,), role="SecurityOfficer")
    assert officer.returncode == 0, officer.stderr


def test_the_hub_and_the_operator_cannot_decide(kubectl: Kubectl, release: Release) -> None:
    assert create(kubectl, release, "weights", ALICE, as_user=ALICE).returncode == 0
    for account, words in (
        (release.hub, "the hub only creates"),
        (release.operator, "writes only the status"),
    ):
        refused(decide(kubectl, release, "weights", as_user=account, as_groups=(OFFICERS,)), words)
    # As itself (so the writers' policy has nothing to say), the operator still creates none.
    own = create(kubectl, release, "by-operator", release.operator, as_user=release.operator)
    refused(own, "writes only the status")


def test_a_path_out_of_the_home_is_refused_by_the_crd(kubectl: Kubectl, release: Release) -> None:
    for path in ("../etc/passwd", "/etc/passwd", "results/../../x", "a//b"):
        result = create(kubectl, release, "escape", ALICE, as_user=ALICE, files=[path])
        refused(result, "must be a path relative to the home folder")


# The same attacks with the protection removed: each succeeds, so the refusals above were the policies'.


def test_without_the_writers_policy_anyone_names_anyone_and_the_requester_approves(
    kubectl: Kubectl, release: Release
) -> None:
    assert create(kubectl, release, "mine", ALICE, as_user=ALICE).returncode == 0
    with without_binding(kubectl, release, "export-writers"):
        assert eventually(lambda: create(kubectl, release, "forged", ALICE, as_user=MALLORY)).returncode == 0
        own = eventually(
            lambda: decide(kubectl, release, "mine", as_user=ALICE, as_groups=(STEWARDS, OFFICERS))
        )
        assert own.returncode == 0, own.stderr


def test_without_its_policy_the_operator_decides(kubectl: Kubectl, release: Release) -> None:
    assert create(kubectl, release, "decided-by-operator", ALICE, as_user=ALICE).returncode == 0
    with without_binding(kubectl, release, "operator-exports"):
        attempt = eventually(
            lambda: decide(kubectl, release, "decided-by-operator", as_user=release.operator, as_groups=())
        )
        assert attempt.returncode == 0, attempt.stderr
