"""A NetworkPolicy that opens a notebook stops it, even behind a Workspace whose pod the quota refuses.

The attack, on the real node: in a team namespace, alice first makes a Workspace whose notebook asks for more
CPU than the namespace's quota holds (its every pass is refused), then starts a second one through the hub,
then adds a NetworkPolicy that opens the second notebook's egress. The operator judged a namespace's
Workspaces one after another when a foreign policy appeared, and the refused pass ended the loop: the second
notebook kept running under the opening policy until the clock's next tick, five minutes later
(tests/unit/test_workspace_fan_out.py holds the old loop failing). Now it is stopped within a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.deployed.conftest import ALICE, Deployed, PortForward, wait_for
from tests.deployed.hub_session import HubSession
from tests.deployed.teams import team_namespace
from tests.deployed.test_operator_restart_churn import _workspace
from tests.integration.conftest import Kubectl

LABEL = "cleanroom.dev/test-policy-fan-out"
DATASET = "deployed-policy-fan-out"


def _condition(kubectl: Kubectl, namespace: str, name: str, kind: str) -> dict[str, Any]:
    conditions = (kubectl.get("workspace", name, "-n", namespace).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


@pytest.fixture(scope="module")
def team(kubectl: Kubectl) -> Iterator[str]:
    with team_namespace(
        kubectl,
        "fan-out",
        LABEL,
        DATASET,
        "Deployed suite: a foreign policy behind a refused Workspace",
        "networkpolicies.networking.k8s.io",
    ) as namespace:
        yield namespace


def test_a_policy_that_opens_a_notebook_stops_it_past_a_workspace_the_quota_refuses(
    kubectl: Kubectl, deployed: Deployed, proxy: PortForward, team: str
) -> None:
    greedy = _workspace(team, "aa-greedy", deployed.notebook_image, True)
    greedy["spec"]["dataset"] = {"name": DATASET}
    greedy["spec"]["resources"]["cpu"] = "17"  # the namespace's quota holds 16 (ci/deployed-values.yaml)
    kubectl.apply(greedy, "--as", ALICE)
    wait_for(
        lambda: _condition(kubectl, team, "aa-greedy", "Ready").get("reason") == "QuotaExceeded",
        timeout=300,
        what="the greedy Workspace refused by the quota",
    )
    victim = _workspace(team, "bb-victim", deployed.notebook_image, False)
    victim["spec"]["dataset"] = {"name": DATASET}
    kubectl.apply(victim, "--as", ALICE)
    HubSession.sign_in(proxy.url, ALICE, ("sample-ai",)).start(team, "bb-victim", timeout=420)
    kubectl.run("wait", "--for=condition=Ready", "workspace/bb-victim", "-n", team, "--timeout=300s")

    opener = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "open-bb-victim", "namespace": team},
        "spec": {
            "podSelector": {"matchLabels": {"cleanroom.dev/workspace": "bb-victim"}},
            "policyTypes": ["Egress"],
            "egress": [{}],
        },
    }
    kubectl.apply(opener, "--as", ALICE)
    egress = wait_for(
        lambda: (
            (c := _condition(kubectl, team, "bb-victim", "EgressRestricted")).get("status") == "False" and c
        ),
        timeout=60,
        what="bb-victim's EgressRestricted=False",
    )
    assert egress["reason"] == "ForeignNetworkPolicy" and "open-bb-victim" in egress["message"]
    wait_for(
        lambda: (
            not [
                p
                for p in kubectl.get("pods", "-n", team, "-l", "cleanroom.dev/workspace=bb-victim")["items"]
                if p["metadata"]["name"] == "ws-bb-victim" and not p["metadata"].get("deletionTimestamp")
            ]
        ),
        timeout=60,
        what="bb-victim's notebook pod stopped",
    )
    # The greedy one is still refused; the victim was judged past it.
    assert _condition(kubectl, team, "aa-greedy", "Ready").get("reason") == "QuotaExceeded"
