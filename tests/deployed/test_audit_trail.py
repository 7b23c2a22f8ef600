"""Every step of a modeller's session, as the deployed pods record it: the operator's and hub's pods (and the
single-user server through the hub's intake) deliver to the audit service over TLS, a security officer finds
each step on the service's page, and the service's own Verify passes against its configured trust anchor."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from tests.deployed.conftest import (
    ALICE,
    SAMPLE_NS,
    Deployed,
    PortForward,
    alice_workspace,
    audit_rows,
    wait_for,
)
from tests.deployed.hub_session import HubSession
from tests.integration.conftest import Kubectl
from tests.integration.lab_client import Lab


def test_every_step_of_a_session_reaches_the_audit_service_and_the_trail_verifies(
    kubectl: Kubectl,
    deployed: Deployed,
    proxy: PortForward,
    sample: dict[str, Any],
    audit_page: requests.Session,
) -> None:
    name = f"audit-{uuid.uuid4().hex[:5]}"
    kubectl.apply(
        alice_workspace(
            name,
            deployed.notebook_image,
            "Deployed suite: the audit trail of one session",
            "200m",
            "512Mi",
            False,
        ),
        "--as",
        ALICE,
    )
    try:
        hub = HubSession.sign_in(proxy.url, ALICE, ("sample-ai",))
        url = hub.start(SAMPLE_NS, name)
        lab = Lab(hub.session, url)
        assert lab.run("print(6 * 7)").strip() == "42"
        dicom = lab.get("api/contents/data?content=1").json()
        first = next(item for item in dicom["content"] if item["type"] == "directory")
        refused = hub.session.get(f"{url}/files/data/{first['name']}/x.dcm")
        assert refused.status_code == 403
        assert hub.stop(SAMPLE_NS, name).status_code == 200
        wait_for(
            lambda: (
                kubectl.get("workspace", name, "-n", SAMPLE_NS).get("status", {}).get("phase") == "Stopped"
            ),
            timeout=120,
            what="the Workspace stopped",
        )

        expected = {
            "workspace.created",
            "workspace.started",
            "session.start",
            "kernel.started",
            "download.refused",
            "session.stop",
            "workspace.stopped",
        }

        def recorded() -> set[str] | None:
            actions = {row["action"] for row in audit_rows(audit_page, workspace=name)}
            return actions if expected <= actions else None

        # Writers deliver from their outboxes within seconds; the officer sees each step of this session.
        found = wait_for(recorded, timeout=120, interval=3, what=f"every step of {name} in the audit trail")
        assert expected <= found
        logins = audit_rows(audit_page, actor=ALICE, action="session.login")
        assert logins and all(row["outcome"] == "success" for row in logins[-1:])
        # Who did it comes from the deployed pods' own identities and the hub's records, never the body.
        by_action = {row["action"]: row for row in audit_rows(audit_page, workspace=name)}
        assert by_action["kernel.started"]["actor"] == ALICE
        assert by_action["workspace.started"]["actor"].endswith(":cleanroom-operator")
        # Each record carries the service's own receive time beside the writer's claimed one.
        assert all(row["received"] for row in by_action.values())

        verified = audit_page.post(f"{audit_page.base}/verify")  # type: ignore[attr-defined]
        assert verified.status_code == 200 and "NOT VERIFIED" not in verified.text, verified.text[-2000:]
    finally:
        kubectl.run("delete", "workspace", name, "-n", SAMPLE_NS, "--wait=false", check=False)
