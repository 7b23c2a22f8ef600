"""One name for each of the security officers' two groups: the audit page's role and the exports' officers'
group default to the contract's values wherever they are read (operator, audit service, chart), and the local
stack's sample officer holds both, so that on `make dev` sam can open the trail and decide on an export."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cleanroom.api.contract import DEFAULT_SECURITY_OFFICER_GROUP, SECURITY_OFFICER_ROLE
from cleanroom.auditweb.service import ServiceConfig
from cleanroom.workspaces.settings import WorkspaceSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_operator_the_audit_service_and_the_chart_default_to_one_officers_group() -> None:
    values = yaml.safe_load((ROOT / "charts/cleanroom/values.yaml").read_text())
    assert values["exports"]["securityOfficerGroup"] == DEFAULT_SECURITY_OFFICER_GROUP
    assert WorkspaceSettings().export_officer_group == DEFAULT_SECURITY_OFFICER_GROUP
    env = {
        name: "x"
        for name in (
            "CLEANROOM_AUDIT_DIR",
            "CLEANROOM_AUDIT_SIGNING_KEY",
            "CLEANROOM_AUDIT_WRITER_ISSUER",
            "CLEANROOM_AUDIT_WRITER_JWKS",
            "CLEANROOM_AUDIT_WRITERS",
            "CLEANROOM_AUDIT_USER_ISSUER",
            "CLEANROOM_AUDIT_USER_JWKS",
            "CLEANROOM_AUDIT_USER_AUDIENCE",
        )
    }
    assert ServiceConfig.from_env(env).export_officer_group == DEFAULT_SECURITY_OFFICER_GROUP


def test_the_sample_officer_holds_the_audit_role_and_the_default_officers_group() -> None:
    users = json.loads((ROOT / "hack/oidc-provider/users.json").read_text())
    assert {SECURITY_OFFICER_ROLE, DEFAULT_SECURITY_OFFICER_GROUP} <= set(users["sam"]["groups"])
    # Nobody else is an officer of either kind: alice requests, stella stewards, eve and mallory are refused.
    others = {name: set(user["groups"]) for name, user in users.items() if name not in ("sam", "_comment")}
    assert all(
        not groups & {SECURITY_OFFICER_ROLE, DEFAULT_SECURITY_OFFICER_GROUP} for groups in others.values()
    )
