"""The chart's wiring of the exports page, rendered by `helm template` (no cluster): the audit service's account
may read ExportRequests and Datasets and patch ExportRequests, nothing more and only with sign-in through the
provider; the export-writers policy holds that account to adding decisions with a proof; the operator is told
whose sign-ins to verify and may reach the provider's keys. tests/integration/test_export_page.py runs it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_chart_metrics import FULL, HELM, NAMESPACE, container, egress_rules, one, render

pytestmark = pytest.mark.skipif(
    not HELM.exists(), reason=f"helm is not built yet ({HELM}): hack/build-binaries.sh helm"
)
ISSUER = "https://login.hospital.example/realms/cleanroom"
OIDC = {
    "hub.oidc.issuer": ISSUER,
    "hub.oidc.clientId": "cleanroom-hub",
    "hub.oidc.clientSecret.secretName": "hub-oidc",
    "hub.oidc.usernameClaim": "email",
    "audit.service.oidc.clientId": "cleanroom-audit",
    "audit.service.oidc.clientSecret.secretName": "audit-oidc",
    "networkPolicy.hubIdentityProviderCIDRs": ["192.0.2.10/32"],
    "networkPolicy.hubIdentityProviderPort": 443,
    "exports.securityOfficerGroup": "security-officers",
}


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec.get("env") or []}


def test_the_page_account_reads_exports_and_datasets_and_patches_exports_only() -> None:
    objects = render(**OIDC)
    role = one(objects, "ClusterRole", f"{FULL}-audit-exports")
    assert role["rules"] == [
        {"apiGroups": ["cleanroom.dev"], "resources": ["exportrequests"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": ["cleanroom.dev"], "resources": ["datasets"], "verbs": ["get", "list"]},
    ]
    binding = one(objects, "ClusterRoleBinding", f"{FULL}-audit-exports")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULL}-audit", "namespace": NAMESPACE}
    ]
    assert (
        env_of(container(objects, f"{FULL}-audit"))["CLEANROOM_AUDIT_EXPORT_OFFICER_GROUP"]
        == "security-officers"
    )


def test_without_sign_in_through_the_provider_the_page_account_gets_nothing() -> None:
    objects = render()
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULL}-audit-exports"]
    assert "CLEANROOM_EXPORT_DECISION_ISSUER" not in env_of(container(objects, f"{FULL}-operator"))


def test_the_operator_verifies_page_decisions_against_the_provider_it_may_reach() -> None:
    objects = render(**OIDC)
    env = env_of(container(objects, f"{FULL}-operator"))
    assert env["CLEANROOM_EXPORT_DECISION_ISSUER"] == ISSUER
    assert env["CLEANROOM_EXPORT_DECISION_AUDIENCE"] == "cleanroom-audit"
    assert env["CLEANROOM_EXPORT_DECISION_USERNAME_CLAIM"] == "email"
    assert {"to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}], "ports": [{"protocol": "TCP", "port": 443}]} in (
        egress_rules(objects)[f"{FULL}-operator"]
    )
    assert {
        "to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    } not in (egress_rules(render())[f"{FULL}-operator"])


def test_the_export_writers_policy_holds_the_page_account_to_decisions_with_a_proof() -> None:
    policy = one(render(**OIDC), "ValidatingAdmissionPolicy", f"{FULL}-export-writers")["spec"]
    page = next(v["expression"] for v in policy["variables"] if v["name"] == "page")
    assert page == f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:{FULL}-audit"'
    rules = [v["expression"] for v in policy["validations"]]
    assert any("!variables.page" in r and "has(d.proof)" in r for r in rules)
    # The requester never decides, proof or not.
    assert "variables.added.all(d, d.by != variables.requester)" in rules
