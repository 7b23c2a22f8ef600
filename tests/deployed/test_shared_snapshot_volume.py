"""One verified copy per snapshot, on the real node (workspaces.snapshotVolumes.mode shared): two Workspaces of
alice in two team namespaces over one snapshot mount the same verified volume, materialized by one Job that
ran one pod; neither notebook can write it (EROFS from the kernel's user); a tenant of one namespace cannot
bind the volume made for the other (and can, as a control, bind one made without the pre-binding); and the
copy and both volumes are collected once no Workspace pins the snapshot.

Where the deployed operator serves copies (the chart's default, and ci/deployed-values.yaml's), the module
upgrades the install to workspaces.snapshotVolumes.mode shared for its tests, then back, and has the sample
Workspace started afresh (hack/deployed-sample.sh) as the suite's session fixture left it: the other modules
find the install they expect whatever order they run in.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cleanroom.api.contract import object_name, snapshot_object_name
from tests.deployed.conftest import (
    ALICE,
    ROOT,
    Deployed,
    PortForward,
    deploy,
    exec_python,
    notebook_pod,
    wait_for,
)
from tests.deployed.hub_session import HubSession
from tests.deployed.teams import start_workspaces
from tests.deployed.test_notebook_confinement import WRITE_DATA
from tests.deployed.test_operator_restart_churn import _dataset, _workspace
from tests.integration.conftest import Kubectl

LABEL = "cleanroom.dev/test-shared"
DATASET = "deployed-shared"

READ_DATA = r"""
import hashlib, json, os
files = sorted(os.path.join(d, f) for d, _, names in os.walk("/data") for f in names)
print(json.dumps({p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in files}))
"""


def _settings(kubectl: Kubectl, deployed: Deployed) -> dict[str, Any]:
    config = kubectl.get("configmap", "-n", deployed.namespace, "cleanroom-workspaces")
    return dict(yaml.safe_load(config["data"]["workspaces.yaml"]))


def _deployed_or_fail(overrides: dict[str, Any] | None = None) -> None:
    result = deploy(overrides)
    if result.returncode != 0:
        pytest.fail(f"hack/deploy.sh failed:\n{result.stderr[-4000:]}")


@pytest.fixture(scope="module")
def snapshots_namespace(kubectl: Kubectl, deployed: Deployed) -> Iterator[str]:
    switched = _settings(kubectl, deployed).get("snapshotVolumeMode") != "shared"
    if switched:
        _deployed_or_fail({"workspaces": {"snapshotVolumes": {"mode": "shared"}}})
    settings = _settings(kubectl, deployed)
    assert settings.get("snapshotVolumeMode") == "shared", settings
    try:
        yield str(settings["snapshotVolumeNamespace"])
    finally:
        if switched:
            _deployed_or_fail()
            # As docs/install.md tells an admin who goes back to copies: the volumes made for claims stay.
            kubectl.run("delete", "pv", "-l", "app.kubernetes.io/component=snapshot-volume", "--wait=false")
            # The sample Workspace's volume was replaced by a shared one and back: started afresh through the
            # hub, as the session fixture `sample` had it.
            sample = subprocess.run(
                [str(ROOT / "hack/deployed-sample.sh")], capture_output=True, text=True, timeout=900
            )
            assert sample.returncode == 0, sample.stderr[-4000:]


@pytest.fixture(scope="module")
def teams(kubectl: Kubectl, snapshots_namespace: str) -> Iterator[list[str]]:
    """Two team namespaces where alice manages Workspaces (and, for the attack, volume claims), admitted by a
    Dataset of their own over the sample corpus."""
    run = uuid.uuid4().hex[:4]
    names = [f"shared-{run}-a", f"shared-{run}-b"]
    dataset = _dataset()
    dataset["metadata"]["name"] = DATASET
    dataset["spec"]["description"] = "Deployed suite: one verified copy for two team namespaces"
    dataset["spec"]["access"]["namespaces"] = {"selector": {"matchLabels": {LABEL: "yes"}}}
    kubectl.apply(dataset)
    for ns in names:
        kubectl.run("create", "namespace", ns)
        kubectl.run("label", "namespace", ns, f"{LABEL}=yes")
        kubectl.run(
            "-n", ns, "create", "role", "modeller", "--verb=get,list,watch,create,update,patch,delete",
            "--resource=workspaces.cleanroom.dev,persistentvolumeclaims",
        )  # fmt: skip
        kubectl.run("-n", ns, "create", "rolebinding", "modeller", "--role=modeller", f"--user={ALICE}")
    kubectl.run("wait", "--for=condition=Ready", f"dataset/{DATASET}", "--timeout=300s")
    try:
        yield names
    finally:
        for ns in names:
            kubectl.run("delete", "workspaces", "--all", "-n", ns, "--wait=false", check=False)
            kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
        kubectl.run("delete", "persistentvolume", "shared-attack-control", "--wait=false", check=False)
        kubectl.run("delete", "dataset", DATASET, "--wait=false", check=False)


@pytest.fixture(scope="module")
def running(
    kubectl: Kubectl, deployed: Deployed, proxy: PortForward, teams: list[str]
) -> list[tuple[str, str]]:
    """One Workspace in each team namespace over the Dataset's snapshot, started by alice through the hub, one
    after the other (the second once the first's copy verified), both Running."""
    pairs = [(ns, f"seg-{ns.rsplit('-', 1)[1]}") for ns in teams]
    return start_workspaces(kubectl, deployed, proxy, pairs, LABEL, DATASET)


def _snapshot(kubectl: Kubectl) -> str:
    return str(kubectl.get("dataset", DATASET)["status"]["snapshot"]["digest"])


def _volume_of(kubectl: Kubectl, namespace: str, claim: str) -> dict[str, Any]:
    bound = kubectl.get("pvc", "-n", namespace, claim)
    assert bound["status"]["phase"] == "Bound", bound["status"]
    return kubectl.get("pv", bound["spec"]["volumeName"])


def test_two_namespaces_mount_one_verified_copy_that_neither_can_write(
    kubectl: Kubectl, snapshots_namespace: str, running: list[tuple[str, str]]
) -> None:
    digest = _snapshot(kubectl)
    copy = snapshot_object_name(DATASET, digest)
    source = _volume_of(kubectl, snapshots_namespace, copy)
    # The materializer ran once: one Job, one pod, for both Workspaces; none of their own.
    job = kubectl.get("job", "-n", snapshots_namespace, f"{copy}-materialize")
    assert job["status"].get("succeeded") == 1
    pods = kubectl.get("pods", "-n", snapshots_namespace, "-l", f"job-name={copy}-materialize")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    contents = []
    for ns, name in running:
        status = kubectl.get("workspace", "-n", ns, name)["status"]
        assert status["snapshotVolume"] == "shared", status
        assert (
            kubectl.run("get", "job", "-n", ns, object_name(name, "materialize"), check=False).returncode != 0
        )
        volume = _volume_of(kubectl, ns, object_name(name, "data"))
        # Its own volume over the very storage the copy was verified in: read-only, retained, pre-bound.
        assert volume["spec"]["hostPath"]["path"] == source["spec"]["hostPath"]["path"]
        assert volume["spec"]["accessModes"] == ["ReadOnlyMany"]
        assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert volume["spec"]["claimRef"]["namespace"] == ns
        pod = notebook_pod(kubectl, ns, name)["metadata"]["name"]
        attempt = exec_python(kubectl, ns, pod, WRITE_DATA)
        assert attempt == {"create": "EROFS", "delete": "EROFS", "append": "EROFS"}, attempt
        contents.append(exec_python(kubectl, ns, pod, READ_DATA))
    assert contents[0] and contents[0] == contents[1]


def _claim(namespace: str, volume: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "steal", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }


def test_a_tenant_of_another_namespace_cannot_bind_the_volume_made_for_the_first(
    kubectl: Kubectl, running: list[tuple[str, str]]
) -> None:
    (ns_a, name_a), (ns_b, _) = running
    target = _volume_of(kubectl, ns_a, object_name(name_a, "data"))
    volume = target["metadata"]["name"]
    kubectl.apply(_claim(ns_b, volume), "--as", ALICE)
    time.sleep(20)
    steal = kubectl.get("pvc", "-n", ns_b, "steal")
    assert steal["status"]["phase"] == "Pending", steal["status"]
    assert kubectl.get("pv", volume)["spec"]["claimRef"]["namespace"] == ns_a
    kubectl.run("delete", "pvc", "-n", ns_b, "steal", "--wait=false")
    # The control: the same storage in a volume without the pre-binding is taken by the same claim at once.
    control = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "shared-attack-control"},
        "spec": {
            key: target["spec"][key]
            for key in ("hostPath", "capacity", "nodeAffinity")
            if key in target["spec"]
        }
        | {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
        },
    }
    kubectl.apply(control)
    claim = _claim(ns_b, "shared-attack-control")
    claim["metadata"]["name"] = "steal-control"
    kubectl.apply(claim, "--as", ALICE)
    kubectl.wait_for(
        lambda c: c["status"].get("phase") == "Bound", "pvc", "-n", ns_b, "steal-control", timeout=60
    )
    kubectl.run("delete", "pvc", "-n", ns_b, "steal-control", "--wait=false")
    kubectl.run("delete", "pv", "shared-attack-control", "--wait=false")


def test_the_copy_and_its_volumes_are_collected_when_no_workspace_pins_the_snapshot(
    kubectl: Kubectl, snapshots_namespace: str, running: list[tuple[str, str]]
) -> None:
    copy = snapshot_object_name(DATASET, _snapshot(kubectl))
    volumes = [_volume_of(kubectl, ns, object_name(name, "data"))["metadata"]["name"] for ns, name in running]
    (ns_a, name_a), (ns_b, name_b) = running
    kubectl.run("delete", "workspace", "-n", ns_a, name_a, "--as", ALICE)
    time.sleep(10)
    # One Workspace still pins it: the copy stays.
    assert kubectl.run("get", "pvc", "-n", snapshots_namespace, copy, check=False).returncode == 0
    kubectl.run("delete", "workspace", "-n", ns_b, name_b, "--as", ALICE)

    def collected() -> bool:
        left = kubectl.run("get", "pvc,job", "-n", snapshots_namespace, "-o", "name", check=False).stdout
        pvs = json.loads(kubectl.run("get", "pv", "-o", "json").stdout)["items"]
        return copy not in left and not any(p["metadata"]["name"] in volumes for p in pvs)

    wait_for(collected, 180, "the shared copy and both volumes to be collected", interval=2)


def test_on_block_storage_the_shared_mode_gives_each_workspace_a_verified_copy_of_its_own(
    kubectl: Kubectl,
    deployed: Deployed,
    proxy: PortForward,
    snapshots_namespace: str,
    teams: list[str],
) -> None:
    """A site whose snapshot storage class is block storage (named in blockProvisioners; here the stack's own
    provisioner stands for it): no second PersistentVolume is made over the copy's disk, which could attach to
    one node only; the Workspace materializes and verifies its own copy, says so, and cannot write it."""
    storage_class = _settings(kubectl, deployed).get("snapshotStorageClass") or ""
    classes = kubectl.get("storageclass")["items"]
    chosen = next(
        c
        for c in classes
        if c["metadata"]["name"] == storage_class
        or (
            not storage_class
            and c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class")
            == "true"
        )
    )
    provisioner = chosen["provisioner"]
    _deployed_or_fail(
        {"workspaces": {"snapshotVolumes": {"mode": "shared", "blockProvisioners": [provisioner]}}}
    )
    ns, name = teams[0], "seg-block"
    body = _workspace(ns, name, deployed.notebook_image, False)
    body["metadata"]["labels"] = {LABEL: "yes"}
    body["spec"]["dataset"] = {"name": DATASET}
    kubectl.apply(body, "--as", ALICE)
    HubSession.sign_in(proxy.url, ALICE, ("sample-ai",)).start(ns, name, timeout=420)
    kubectl.run("wait", "--for=condition=Ready", f"workspace/{name}", "-n", ns, "--timeout=300s")
    status = kubectl.get("workspace", "-n", ns, name)["status"]
    assert status["snapshotVolume"] == "copy", status
    mounted = next(c for c in status["conditions"] if c["type"] == "DatasetMounted")
    assert provisioner in mounted["message"] and "copy of its own" in mounted["message"], mounted
    assert kubectl.get("job", "-n", ns, object_name(name, "materialize"))["status"].get("succeeded") == 1
    copy = snapshot_object_name(DATASET, _snapshot(kubectl))
    assert kubectl.run("get", "pvc", "-n", snapshots_namespace, copy, check=False).returncode != 0
    volume = _volume_of(kubectl, ns, object_name(name, "data"))
    assert volume["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "snapshot-volume"
    pod = notebook_pod(kubectl, ns, name)["metadata"]["name"]
    attempt = exec_python(kubectl, ns, pod, WRITE_DATA)
    assert attempt == {"create": "EROFS", "delete": "EROFS", "append": "EROFS"}, attempt
    assert exec_python(kubectl, ns, pod, READ_DATA)
    kubectl.run("delete", "workspace", "-n", ns, name, "--as", ALICE)
