"""The materializer Job and the egress probe as they run on the real node: the copy in the notebook's volume
is the snapshot, byte for byte; an object changed in the store fails the copy and the Workspace says so; the
probe runs under the notebook's policies; and a second NetworkPolicy that opens the notebook is noticed."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from minio import Minio

from cleanroom.api import find_condition
from tests.deployed.conftest import (
    ALICE,
    SAMPLE_NS,
    SAMPLE_WS,
    Deployed,
    PortForward,
    alice_workspace,
    exec_python,
    notebook_pod,
    wait_for,
)
from tests.integration.conftest import Kubectl

HASH_DATA = r"""
import hashlib, json, os
manifest = json.load(open("/data/MANIFEST.json"))
bad = [f["path"] for f in manifest["files"]
       if hashlib.sha256(open(os.path.join("/data", f["path"]), "rb").read()).hexdigest() != f["digest"].removeprefix("sha256:")]
print(json.dumps({"digest": manifest["digest"], "files": len(manifest["files"]), "bad": bad}))
"""


def condition(kubectl: Kubectl, namespace: str, name: str, kind: str) -> dict[str, Any]:
    body = kubectl.get("workspace", name, "-n", namespace)
    return dict(find_condition((body.get("status") or {}).get("conditions"), kind) or {})


def test_the_materializer_copied_the_snapshot_byte_for_byte(kubectl: Kubectl, sample: dict[str, Any]) -> None:
    digest = sample["status"]["snapshot"]["digest"]
    job = kubectl.get("job", f"ws-{SAMPLE_WS}-materialize", "-n", SAMPLE_NS)
    assert job["status"].get("succeeded") == 1
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)["metadata"]["name"]
    copied = exec_python(kubectl, SAMPLE_NS, pod, HASH_DATA)
    assert copied["digest"] == digest and copied["files"] > 0 and copied["bad"] == []
    # The grant is spent once the copy is verified: the Secret no longer holds a URL.
    secret = kubectl.get("secret", f"ws-{SAMPLE_WS}-reader", "-n", SAMPLE_NS)
    assert not (secret.get("data") or {}).get("grantUrl")


@pytest.fixture
def store_client(store: PortForward, deployed: Deployed) -> Minio:
    return Minio(f"127.0.0.1:{store.port}", deployed.s3_access_key, deployed.s3_secret_key, secure=False)


@pytest.fixture
def tampered_object(store_client: Minio, sample: dict[str, Any]) -> Iterator[str]:
    """One object of the sample snapshot changed in the store (as whoever holds the store's keys could), put
    back afterwards."""
    digest = sample["status"]["snapshot"]["digest"].removeprefix("sha256:")
    manifest = json.loads(
        store_client.get_object("cleanroom-snapshots", f"snapshots/sample-ct/{digest}.json").read()
    )
    entry = manifest["files"][0]
    key = "objects/sha256/" + entry["digest"].removeprefix("sha256:")
    original = store_client.get_object("cleanroom-snapshots", key).read()
    forged = original[:-1] + bytes([original[-1] ^ 0xFF])
    store_client.put_object("cleanroom-snapshots", key, io.BytesIO(forged), len(forged))
    yield entry["path"]
    store_client.put_object("cleanroom-snapshots", key, io.BytesIO(original), len(original))
    assert hashlib.sha256(store_client.get_object("cleanroom-snapshots", key).read()).hexdigest() in key


def workspace(name: str, image: str, running: bool = True) -> dict[str, Any]:
    return alice_workspace(
        name, image, "Deployed suite: the materializer against a changed store", "100m", "256Mi", running
    )


def test_an_object_changed_in_the_store_fails_the_copy_and_the_workspace_says_so(
    kubectl: Kubectl, deployed: Deployed, tampered_object: str
) -> None:
    name = f"tamper-{uuid.uuid4().hex[:5]}"
    kubectl.apply(workspace(name, deployed.notebook_image), "--as", ALICE)
    try:
        ready = wait_for(
            lambda: (
                (c := condition(kubectl, SAMPLE_NS, name, "Ready")).get("reason")
                == "SnapshotVerificationFailed"
                and c
            ),
            timeout=300,
            what="the Workspace to report the failed verification",
            interval=2,
        )
        assert "materializing snapshot" in ready["message"], ready
        # The copy refused the changed file by name: its pod's termination message, which the admin reads in
        # the Workspace's Ready condition.
        assert tampered_object in ready["message"], ready
        # No notebook ever ran over the unverified copy.
        pods = kubectl.get(
            "pods",
            "-n",
            SAMPLE_NS,
            "-l",
            f"cleanroom.dev/workspace={name},app.kubernetes.io/component=notebook",
        )
        assert not [p for p in pods["items"] if "egress-probe" not in p["metadata"]["name"]]
    finally:
        kubectl.run("delete", "workspace", name, "-n", SAMPLE_NS, "--wait=false", check=False)


def test_the_egress_probe_ran_on_the_node_and_found_every_route_blocked(
    kubectl: Kubectl, sample: dict[str, Any]
) -> None:
    # A fresh verdict for the stack as it is now: deleting the probe pod makes the operator probe again.
    kubectl.run("delete", "pod", f"ws-{SAMPLE_WS}-egress-probe", "-n", SAMPLE_NS, "--wait=true", check=False)
    wait_for(
        lambda: (
            kubectl.get("pod", f"ws-{SAMPLE_WS}-egress-probe", "-n", SAMPLE_NS)["status"].get("phase")
            == "Succeeded"
            if kubectl.run(
                "get", "pod", f"ws-{SAMPLE_WS}-egress-probe", "-n", SAMPLE_NS, check=False
            ).returncode
            == 0
            else False
        ),
        timeout=120,
        what="the probe to run again",
        interval=2,
    )
    egress = wait_for(
        lambda: (
            (c := condition(kubectl, SAMPLE_NS, SAMPLE_WS, "EgressRestricted")).get("status")
            in ("True", "False")
            and c
        ),
        timeout=180,
        what="the egress probe's verdict",
        interval=2,
    )
    assert (egress["status"], egress["reason"]) == ("True", "AllRoutesBlocked"), egress
    probe = kubectl.get("pod", f"ws-{SAMPLE_WS}-egress-probe", "-n", SAMPLE_NS)
    assert probe["spec"]["nodeName"] == "real-0" and probe["status"]["phase"] == "Succeeded"


def test_a_second_policy_that_opens_the_notebook_is_noticed_and_the_notebook_stopped(
    kubectl: Kubectl, deployed: Deployed, sample: dict[str, Any]
) -> None:
    opener = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-notebook-egress", "namespace": SAMPLE_NS},
        "spec": {
            "podSelector": {"matchLabels": {"cleanroom.dev/workspace": SAMPLE_WS}},
            "policyTypes": ["Egress"],
            "egress": [{}],
        },
    }
    kubectl.apply(opener)
    try:
        egress = wait_for(
            lambda: (
                (c := condition(kubectl, SAMPLE_NS, SAMPLE_WS, "EgressRestricted")).get("status") == "False"
                and c
            ),
            timeout=60,
            what="EgressRestricted=False",
        )
        assert egress["reason"] == "ForeignNetworkPolicy" and "allow-notebook-egress" in egress["message"]
        wait_for(
            lambda: (
                not [
                    p
                    for p in kubectl.get(
                        "pods", "-n", SAMPLE_NS, "-l", f"cleanroom.dev/workspace={SAMPLE_WS}"
                    )["items"]
                    if p["metadata"]["name"] == f"ws-{SAMPLE_WS}"
                    and not p["metadata"].get("deletionTimestamp")
                ]
            ),
            timeout=60,
            what="the notebook pod stopped",
        )
        events = kubectl.get(
            "events", "-n", SAMPLE_NS, "--field-selector", f"involvedObject.name={SAMPLE_WS}"
        )
        assert any(e["type"] == "Warning" and e["reason"] == "EgressWidened" for e in events["items"])
    finally:
        kubectl.run("delete", "networkpolicy", "allow-notebook-egress", "-n", SAMPLE_NS, check=False)
    # Without it the notebook runs again.
    wait_for(
        lambda: condition(kubectl, SAMPLE_NS, SAMPLE_WS, "Ready").get("status") == "True",
        timeout=180,
        what="the notebook back once the policy is gone",
        interval=2,
    )
