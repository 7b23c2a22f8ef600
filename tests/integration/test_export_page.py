"""Approving exports on the officers' page, attacked first, on the real stack: the audit service as a process
(`cleanroom audit serve`) signing people in through a real OpenID Connect provider (hack/oidc-provider), acting
on the real API server with the chart's own service account, RBAC and export-writers admission policy
(rendered from the chart, bound to this module's namespace), and the operator under test verifying each
decision's sign-in against the provider's keys.

Two requests wait in one Workspace: A, asked by alice (a modeller), and B, asked by stella (a data steward of
the Dataset). People: stella (steward), sam (security officer), alice and eve (neither). Each attack is
refused with its reason and lands in the trail; then stella and sam approve A from the page and A is released.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from cleanroom.audit import read_records
from tests.integration.audit_service_process import AuditService
from tests.integration.conftest import ROOT, Kubectl, OperatorProcess, workspace_settings_file
from tests.integration.oidc_provider_process import Provider, follow_to, provider, sign_in_at_provider
from tests.integration.test_admission import render
from tests.integration.test_exports import (
    METRICS,
    OUTBOX,
    objects,
    run_the_check_job,
    run_the_copy_job,
    wait_phase,
)
from tests.integration.test_workspaces import dataset, workspace

__all__ = ["dataset", "provider"]  # fixtures

SCOPE = "cleanroom-test/export-page"
STEWARDS, OFFICERS = "sample-stewards", "security-officer"  # as hack/oidc-provider/users.json has them
ALICE, STELLA, SAM = "alice@hospital.example", "stella@hospital.example", "sam@hospital.example"
REASON = "Looked at the CSV: Dice per fold, aggregates only"


@dataclass(frozen=True)
class Scene:
    namespace: str
    service: AuditService
    provider: Provider
    kubectl: Kubectl
    page_account: str  # the audit service's service account, as the API server names it
    page_kubeconfig: str


def _page_kubeconfig(kubectl: Kubectl, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig holding a token of the page's service account: what the audit service's pod has, and what
    an attacker who took it would have."""
    token = kubectl.run("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    config = yaml.safe_load(kubectl.run("config", "view", "--minify", "--raw").stdout)
    config["users"] = [{"name": "page", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "page"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def release(kubectl: Kubectl, provider: Provider) -> Iterator[tuple[str, str, str]]:
    """The chart's export-writers policy and the page's account with its RBAC, under a release of this module's
    own; the binding selects this module's namespace only."""
    suffix = uuid.uuid4().hex[:6]
    name, system, guarded = f"xpg{suffix}", f"xpg-{suffix}", f"xpg-ws-{suffix}"
    for ns in (system, guarded):
        kubectl.run("create", "namespace", ns)
    kubectl.run("label", "namespace", guarded, f"{SCOPE}={name}")
    full = f"{name}-cleanroom"
    values = ["--set", f"hub.oidc.issuer={provider.issuer}", "--set", "hub.oidc.clientId=cleanroom-hub",
              "--set", "hub.oidc.clientSecret.secretName=hub-oidc", "--set", "audit.service.oidc.clientId=cleanroom-audit",
              "--set", "audit.service.oidc.clientSecret.secretName=audit-oidc",
              "--set", f"exports.securityOfficerGroup={OFFICERS}"]  # fmt: skip
    wanted = {f"{full}-export-writers", f"{full}-audit-exports", f"{full}-audit"}
    objects_ = [o for o in render(name, system, *values) if o["metadata"]["name"] in wanted]
    assert {o["kind"] for o in objects_} >= {"ValidatingAdmissionPolicy", "ClusterRole", "ServiceAccount"}, (
        objects_
    )
    for item in objects_:
        if item["kind"] == "ValidatingAdmissionPolicyBinding":
            item["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE: name}}}
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objects_})
    yield guarded, system, full
    for item in objects_:
        if item["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole",
                            "ClusterRoleBinding"):  # fmt: skip
            kubectl.run("delete", item["kind"], item["metadata"]["name"], "--ignore-not-found", check=False)
    kubectl.run("delete", "namespace", system, guarded, "--wait=false", check=False)


@pytest.fixture(scope="module")
def page_operator(operator: OperatorProcess, provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:  # fmt: skip
    """The suite's operator, started again with the page's provider to verify decisions against, and the
    provider's officers' group as the installation's (the chart sets both from its values)."""
    settings = yaml.safe_load(workspace_settings_file().read_text())
    path = tmp_path_factory.mktemp("page-operator") / "settings.yaml"
    path.write_text(yaml.safe_dump({**settings, "exportOfficerGroup": OFFICERS}))
    operator.stop()
    operator.extra_env = {
        "CLEANROOM_WORKSPACE_CONFIG": str(path),
        "CLEANROOM_EXPORT_DECISION_ISSUER": provider.issuer,
        "CLEANROOM_EXPORT_DECISION_AUDIENCE": "cleanroom-audit",
        "CLEANROOM_EXPORT_DECISION_USERNAME_CLAIM": "email",
    }
    operator.start()
    yield operator
    operator.stop()
    operator.extra_env = {}
    operator.start()


@pytest.fixture(scope="module")
def scene(
    kubectl: Kubectl,
    kubeconfig: str,
    provider: Provider,
    release: tuple[str, str, str],
    page_operator: OperatorProcess,
    dataset: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    namespace, system, full = release
    workdir = tmp_path_factory.mktemp("export-page")
    page_kubeconfig = _page_kubeconfig(kubectl, system, f"{full}-audit", workdir / "page.kubeconfig")
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds/cleanroom.dev_exportrequests.yaml"))
    # Stella is a steward who also works in the Workspace (she asks for B).
    users = kubectl.get("dataset", dataset)["spec"]["access"]["users"]
    kubectl.run("patch", "dataset", dataset, "--type=merge", "-p", json.dumps({"spec": {
        "export": {"stewardGroup": STEWARDS}, "access": {"users": sorted({*users, STELLA})}}}))  # fmt: skip
    kubectl.apply(workspace("seg", dataset, users=[ALICE, STELLA]), "-n", namespace)
    kubectl.wait_for(lambda w: (w.get("status") or {}).get("snapshot", {}).get("digest"), "workspace", "seg",
                     "-n", namespace, timeout=120)  # fmt: skip
    # The Workspace's users may ask for exports here (RBAC; who they are is admission's).
    kubectl.run("create", "role", "exporters", "-n", namespace, "--verb=create,get",
                "--resource=exportrequests.cleanroom.dev")  # fmt: skip
    kubectl.run("create", "rolebinding", "exporters", "-n", namespace, "--role=exporters", f"--user={ALICE}",
                f"--user={STELLA}")  # fmt: skip
    service = AuditService(
        kubectl,
        kubeconfig,
        tmp_path_factory.mktemp("audit"),
        {
            **provider.audit_env(),
            "KUBECONFIG": page_kubeconfig,
            "CLEANROOM_AUDIT_EXPORT_OFFICER_GROUP": OFFICERS,
        },
    )
    yield Scene(
        namespace, service, provider, kubectl, f"system:serviceaccount:{system}:{full}-audit", page_kubeconfig
    )
    service.stop()
    kubectl.run("patch", "dataset", dataset, "--type=json", "-p",
                json.dumps([{"op": "remove", "path": "/spec/export/stewardGroup"}]), check=False)  # fmt: skip


def ask(scene: Scene, by: str, home: Path) -> dict[str, Any]:
    """`by` asks for results/metrics.csv; the copy and the checks are done as their Jobs do them; waits for
    the approvers."""
    name = f"x-{uuid.uuid4().hex[:6]}"
    request = {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "ExportRequest",
        "metadata": {"name": name, "annotations": {"cleanroom.dev/requested-by": by}},
        "spec": {"workspace": "seg", "files": ["results/metrics.csv"],
                 "justification": "Aggregate Dice per fold for table 2 of the paper"},
    }  # fmt: skip
    scene.kubectl.apply(request, "-n", scene.namespace, "--as", by)
    (home / "results").mkdir(parents=True, exist_ok=True)
    (home / "results/metrics.csv").write_bytes(METRICS)
    # The operator writes the copy's Secret a moment before its Job (seen once: the Job not found yet).
    scene.kubectl.wait_for(lambda job: True, "job", f"xr-{name}-copy", "-n", scene.namespace)
    run_the_copy_job(scene.kubectl, scene.namespace, name, home)
    run_the_check_job(scene.kubectl, scene.namespace, name)
    body = wait_phase(scene.kubectl, scene.namespace, name, "AwaitingApproval", "Rejected", "Failed")
    assert body["status"]["phase"] == "AwaitingApproval", json.dumps(body["status"], indent=1)
    return body


@pytest.fixture(scope="module")
def requests_(
    scene: Scene, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A (alice's) and B (stella's), both waiting for their approvers."""
    return ask(scene, ALICE, tmp_path_factory.mktemp("alice")), ask(
        scene, STELLA, tmp_path_factory.mktemp("stella")
    )


def browser(scene: Scene) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = scene.service.ca
    return session


def signed_in(scene: Scene, user: str) -> requests.Session:
    session = browser(scene)
    callback = sign_in_at_provider(
        session, f"{scene.service.url}/oidc/login?next=/exports", user, otp="123456"
    )
    landed = session.get(callback)
    assert landed.status_code == 200 and f"Signed in as {user}" in landed.text, landed.text
    return session


def csrf_of(page: requests.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, f"no decision form on the page:\n{page.text[:3000]}"
    return found.group(1)


def post_decision(
    scene: Scene,
    session: requests.Session,
    body: dict[str, Any],
    role: str,
    verdict: str = "Approve",
    **form: str,
) -> requests.Response:
    """Posts the page's form as the browser would and, when the page sends it on to sign in for the decision,
    follows it to the provider and back (the provider's session answers without a password) to the callback."""
    meta = body["metadata"]
    fields = {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"], "role": role,
              "verdict": verdict, "reason": REASON, **form}  # fmt: skip
    if "csrf" not in fields:
        fields["csrf"] = csrf_of(session.get(f"{scene.service.url}/exports"))
    posted = session.post(f"{scene.service.url}/exports/decide", data=fields, allow_redirects=False)
    onward = re.search(r"id='continue' href='([^']+)'", posted.text)
    if posted.status_code != 200 or not onward:
        return posted
    to_provider = session.get(html.unescape(onward.group(1)), allow_redirects=False)
    return session.get(follow_to(session, to_provider, "/oidc/callback"), allow_redirects=False)


def page_events(scene: Scene) -> list[dict[str, Any]]:
    return [
        r["event"]
        for r in read_records(scene.service.directory)
        if r["event"]["action"] == "export.page_decision"
    ]


def spec_decisions(scene: Scene, body: dict[str, Any]) -> list[dict[str, Any]]:
    current = scene.kubectl.get("exportrequest", body["metadata"]["name"], "-n", scene.namespace)
    return list(current["spec"].get("decisions") or [])


def as_page(scene: Scene, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with the page's service-account token: an attacker who took it from the pod."""
    return Kubectl(scene.page_kubeconfig).run(*args, check=False)


# --- the attacks ----------------------------------------------------------------------------------------------


def test_someone_who_is_neither_officer_nor_steward_gets_no_session(scene: Scene) -> None:
    for user in ("alice", "eve"):
        session = browser(scene)
        callback = sign_in_at_provider(
            session, f"{scene.service.url}/oidc/login?next=/exports", user, otp="123456"
        )
        refused = session.get(callback)
        assert refused.status_code == 403 and "does not have the security-officer role" in refused.text
        assert not any(c.name == "cleanroom-audit-session" for c in session.cookies)
        page = session.get(f"{scene.service.url}/exports", allow_redirects=False)
        assert page.status_code == 302 and page.headers["Location"].startswith("/oidc/login")


def test_the_requester_cannot_approve_her_own_export(scene: Scene, requests_: tuple[dict[str, Any], dict[str, Any]]) -> None:  # fmt: skip
    _a, b = requests_
    stella = signed_in(scene, "stella")
    page = stella.get(f"{scene.service.url}/exports")
    assert b["metadata"]["name"] in page.text and "the requester of an export cannot decide" in page.text
    # The form is not offered; posted anyway (with a token from her session), it is refused.
    csrf = csrf_of(page)  # A's form
    for role in ("DataSteward", "SecurityOfficer"):
        refused = post_decision(scene, stella, b, role, csrf=csrf)
        assert refused.status_code == 403 and "requester" in html.unescape(refused.text), refused.text
    assert spec_decisions(scene, b) == []
    assert ("denied", STELLA) in [(e["outcome"], e["actor"]["name"]) for e in page_events(scene)]


def test_a_role_the_sign_in_does_not_hold_is_refused(scene: Scene, requests_: tuple[dict[str, Any], dict[str, Any]]) -> None:  # fmt: skip
    a, _b = requests_
    refused = post_decision(scene, signed_in(scene, "stella"), a, "SecurityOfficer")
    assert refused.status_code == 403 and "is not in security-officer" in html.unescape(refused.text)
    assert spec_decisions(scene, a) == []


def test_a_form_without_the_sessions_csrf_token_is_refused(scene: Scene, requests_: tuple[dict[str, Any], dict[str, Any]]) -> None:  # fmt: skip
    a, _b = requests_
    sam, stella = signed_in(scene, "sam"), signed_in(scene, "stella")
    stellas = csrf_of(stella.get(f"{scene.service.url}/exports"))
    for token in ("", "0" * 64, stellas):  # none, made up, another session's
        refused = post_decision(scene, sam, a, "SecurityOfficer", csrf=token)
        assert refused.status_code == 403 and "CSRF" in refused.text
    # A cross-site form: the session cookie is SameSite=Strict, so the post arrives without one.
    bare = browser(scene).post(
        f"{scene.service.url}/exports/decide", data={"csrf": stellas}, allow_redirects=False
    )
    assert bare.status_code in (302, 303) and "/login" in bare.headers["Location"]
    assert spec_decisions(scene, a) == []


def test_the_page_account_cannot_decide_for_anyone(scene: Scene, requests_: tuple[dict[str, Any], dict[str, Any]]) -> None:  # fmt: skip
    """What a thief of the audit service's token can write: a decision naming sam without his sign-in is
    refused by admission; with a made-up proof it is admitted and not counted; nothing else of the request
    changes."""
    a, _b = requests_
    name = a["metadata"]["name"]
    plain = {
        "by": SAM,
        "groups": [OFFICERS],
        "role": "SecurityOfficer",
        "verdict": "Approve",
        "reason": REASON,
    }
    patch = json.dumps([{"op": "add", "path": "/spec/decisions", "value": [plain]}])
    refused = as_page(
        scene, "patch", "exportrequest", name, "-n", scene.namespace, "--type=json", "-p", patch
    )
    assert refused.returncode != 0 and "a decision names its author" in refused.stderr, refused.stderr
    annotate = as_page(scene, "annotate", "exportrequest", name, "-n", scene.namespace, "x=y")
    assert annotate.returncode != 0 and "only adds decisions" in annotate.stderr, annotate.stderr
    assert as_page(scene, "get", "secrets", "-n", scene.namespace).returncode != 0  # RBAC: exports only


def test_the_steward_and_the_officer_approve_and_the_export_is_released(
    scene: Scene, requests_: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    a, b = requests_
    stella = signed_in(scene, "stella")
    # Her session's CSRF token, for the second try below (once she decided, the page offers her no form).
    token = csrf_of(stella.get(f"{scene.service.url}/exports"))
    # A form field naming someone else is not read: the name comes from the sign-in.
    recorded = post_decision(scene, stella, a, "DataSteward", by=SAM, user=SAM)
    assert recorded.status_code == 200 and "recorded" in recorded.text, recorded.text
    (decision,) = spec_decisions(scene, a)
    assert decision["by"] == STELLA and decision["groups"] == [STEWARDS] and decision["proof"]["idToken"]
    # One approval does not release.
    body = scene.kubectl.wait_for(lambda x: len(x["status"].get("decisions") or []) == 1, "exportrequest",
                                  a["metadata"]["name"], "-n", scene.namespace)  # fmt: skip
    assert body["status"]["phase"] == "AwaitingApproval" and body["status"]["decisions"][0]["counted"], body[
        "status"
    ]
    # Her decision's sign-in is not a session: in the session cookie, the page sends the browser to sign in.
    thief = browser(scene)
    thief.cookies.set("cleanroom-audit-session", decision["proof"]["idToken"], domain="127.0.0.1", path="/")
    assert thief.get(f"{scene.service.url}/exports", allow_redirects=False).status_code == 302
    # Approving twice: the second time is refused, and nothing is added.
    again = post_decision(scene, stella, a, "DataSteward", csrf=token)
    assert again.status_code == 403 and "decided on" in html.unescape(again.text), again.text
    assert len(spec_decisions(scene, a)) == 1
    # The officer approves.
    sam = signed_in(scene, "sam")
    assert post_decision(scene, sam, a, "SecurityOfficer").status_code == 200
    # Replay: sam's genuine decision on A, copied onto B by the page's account, is admitted (it carries a
    # proof) and never counts there: his sign-in was made for A.
    sams = next(d for d in spec_decisions(scene, a) if d["by"] == SAM)
    patch = json.dumps([{"op": "add", "path": "/spec/decisions", "value": [sams]}])
    copied = as_page(scene, "patch", "exportrequest", b["metadata"]["name"], "-n", scene.namespace, "--type=json",
                     "-p", patch)  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    b_now = scene.kubectl.wait_for(lambda x: (x["status"].get("decisions") or []), "exportrequest",
                                   b["metadata"]["name"], "-n", scene.namespace)  # fmt: skip
    assert not b_now["status"]["decisions"][0]["counted"], b_now["status"]
    assert "another request" in b_now["status"]["decisions"][0]["note"], b_now["status"]
    scene.kubectl.run("wait", "--for=condition=Released", f"exportrequest/{a['metadata']['name']}", "-n",
                      scene.namespace, "--timeout=60s")  # fmt: skip
    released = scene.kubectl.get("exportrequest", a["metadata"]["name"], "-n", scene.namespace)
    approved = next(c for c in released["status"]["conditions"] if c["type"] == "Approved")
    assert f"{STELLA} (DataSteward) and {SAM} (SecurityOfficer)" in approved["message"]
    assert objects(released["status"]["outbox"], OUTBOX) != []
    # Every decision made on the page, with the actor from the sign-in.
    made = [(e["actor"]["name"], e["outcome"], e["resources"].get("export")) for e in page_events(scene)]
    assert (STELLA, "success", a["metadata"]["name"]) in made and (
        SAM,
        "success",
        a["metadata"]["name"],
    ) in made


def test_a_rejection_on_the_page_reaches_the_requester(scene: Scene, tmp_path: Path) -> None:
    c = ask(scene, ALICE, tmp_path)
    sam = signed_in(scene, "sam")
    because = "The CSV has a row per patient: aggregate it per fold first"
    assert post_decision(scene, sam, c, "SecurityOfficer", "Reject", reason=because).status_code == 200
    body = wait_phase(scene.kubectl, scene.namespace, c["metadata"]["name"], "Rejected")
    rejected = next(x for x in body["status"]["conditions"] if x["type"] == "Rejected")
    assert because in rejected["message"] and SAM in rejected["message"]
