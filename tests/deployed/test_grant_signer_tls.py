"""The grant signer's answers do not cross the pod network in clear.

Each answer of the grant signer is a batch of presigned URLs, each of which reads a snapshot object (a
de-identified study) from the store until it expires, from anywhere that reaches the store. The attack, on
the real node: whoever holds the node (or a pod on the host network) captures the pod network's traffic
while a Workspace's materializer copies its snapshot, and reads the URLs out of the signer's answers. Before,
the signer spoke plain HTTP and the capture held them; now it speaks TLS with a certificate from the chart's
own CA, which the materializer checks the signer against and no other.

The same capture is the control: the local stack's bundled store speaks plain HTTP (a site's store is its own
choice, and a production S3 endpoint speaks HTTPS), and the URLs are read there, in the materializer's GETs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deployed.conftest import ALICE, Deployed, wait_for
from tests.deployed.sniff import capturing
from tests.deployed.teams import team_namespace
from tests.deployed.test_operator_restart_churn import _workspace
from tests.integration.conftest import Kubectl

LABEL = "cleanroom.dev/test-signer-tls"
DATASET = "deployed-signer-tls"
SIGNATURE = b"X-Amz-Signature="


@pytest.fixture(scope="module")
def team(kubectl: Kubectl) -> Iterator[str]:
    with team_namespace(
        kubectl, "signer-tls", LABEL, DATASET, "Deployed suite: the grant signer's traffic, captured"
    ) as namespace:
        yield namespace


def _mounted(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    conditions = (kubectl.get("workspace", name, "-n", namespace).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "DatasetMounted"), {})


def test_a_capture_of_the_pod_network_reads_no_url_from_the_signers_answers(
    kubectl: Kubectl, deployed: Deployed, team: str
) -> None:
    config = kubectl.get("configmap", "-n", deployed.namespace, "cleanroom-workspaces")
    settings = yaml.safe_load(config["data"]["workspaces.yaml"])
    signer_port, store_port = int(settings["grantSignerPort"]), int(settings["snapshotEgressPort"])
    body = _workspace(team, "captured", deployed.notebook_image, True)
    body["spec"]["dataset"] = {"name": DATASET}
    with capturing(signer_port, store_port) as seen:
        kubectl.apply(body, "--as", ALICE)
        wait_for(
            lambda: _mounted(kubectl, team, "captured").get("status") == "True",
            timeout=300,
            what="the snapshot materialized and mounted",
        )
    signer = seen.joined(signer_port)
    assert signer, "the capture saw none of the signer's traffic: it proves nothing"
    assert SIGNATURE not in signer, "presigned URLs crossed the pod network in clear"
    assert b"/v1/sign" not in signer and b'"urls"' not in signer
    # TLS: handshakes (records of type 22) and no HTTP request line in clear.
    payloads = seen.payloads[signer_port]
    assert any(p[:1] == b"\x16" for p in payloads)
    assert not any(p.startswith((b"POST ", b"GET ", b"HTTP/1.")) for p in payloads)
    # The control: the same capture reads the URLs where they do travel in clear (the stack's HTTP store).
    assert SIGNATURE in seen.joined(store_port)
