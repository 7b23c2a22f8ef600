"""The chart's wiring of workspaces.snapshotVolumes, rendered by `helm template` (no cluster): the copy mode
(the default) grants nothing new; the shared mode makes the snapshot namespace, grants the operator there
only what a copy is made of, PersistentVolumes cluster-wide without patch, holds them with the
operator-volumes policy, and tells the operator the mode; an unknown mode is refused by the schema."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleanroom.workspaces.settings import SNAPSHOT_VOLUME_MODES, load_settings
from tests.unit.test_chart_metrics import mounted_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/cleanroom"
VERSIONS = dict(
    line.split("=", 1) for line in (ROOT / "hack/versions.env").read_text().splitlines() if "=" in line
)
CACHE = Path(os.environ.get("CLEANROOM_CACHE", Path.home() / ".cache/cleanroom"))
HELM = CACHE / f"bin/helm-{VERSIONS['HELM_VERSION']}/helm"

pytestmark = pytest.mark.skipif(
    not HELM.exists(), reason=f"helm is not built yet ({HELM}): hack/build-binaries.sh helm"
)


def _render(*values: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), "template", "cleanroom", str(CHART), "-n", "cleanroom-system",
         "--kube-version", VERSIONS["K8S_VERSION"].lstrip("v"), *values],
        capture_output=True, text=True, check=check, timeout=120,
    )  # fmt: skip


def _objects(*values: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_render(*values).stdout) if d]


def _settings(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "cleanroom-workspaces"
    )
    return dict(yaml.safe_load(config["data"]["workspaces.yaml"]))


def _rules_on(objects: list[dict[str, Any]], resource: str) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [
        (o["kind"], o["metadata"].get("namespace"), tuple(rule["verbs"]))
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
        for rule in o.get("rules", ())
        if resource in rule.get("resources", ())
    ]


def test_the_copy_mode_grants_no_persistent_volumes_and_makes_no_namespace() -> None:
    objects = _objects()
    assert _settings(objects)["snapshotVolumeMode"] == "copy"
    assert _rules_on(objects, "persistentvolumes") == []
    assert not any(
        o["kind"] == "Namespace" and o["metadata"]["name"] == "cleanroom-snapshots" for o in objects
    )


def test_the_shared_mode_grants_exactly_what_a_copy_and_its_volumes_need() -> None:
    objects = _objects("--set", "workspaces.snapshotVolumes.mode=shared")
    settings = _settings(objects)
    assert (settings["snapshotVolumeMode"], settings["snapshotVolumeNamespace"]) == (
        "shared",
        "cleanroom-snapshots",
    )
    namespace = next(
        o for o in objects if o["kind"] == "Namespace" and o["metadata"]["name"] == "cleanroom-snapshots"
    )
    assert namespace["metadata"]["labels"]["cleanroom.dev/workspaces"] == "true"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert _rules_on(objects, "persistentvolumes") == [
        ("ClusterRole", None, ("get", "list", "create", "delete"))
    ]
    # Only read: which provisioner serves the snapshot storage class (block storage gets a copy each).
    assert _rules_on(objects, "storageclasses") == [("ClusterRole", None, ("get", "list"))]
    claims = [r for r in _rules_on(objects, "persistentvolumeclaims") if r[1] == "cleanroom-snapshots"]
    assert claims == [("Role", "cleanroom-snapshots", ("get", "list", "create", "patch", "delete"))]
    secrets = [r for r in _rules_on(objects, "secrets") if r[1] == "cleanroom-snapshots"]
    assert secrets == [("Role", "cleanroom-snapshots", ("create", "patch", "delete"))]
    policy = next(
        o
        for o in objects
        if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"].endswith("operator-volumes")
    )
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["persistentvolumes"]
    assert any(
        o["kind"] == "ValidatingAdmissionPolicyBinding"
        and o["spec"]["policyName"] == policy["metadata"]["name"]
        for o in objects
    )


def test_the_schema_admits_exactly_the_modes_the_operator_knows() -> None:
    for mode in SNAPSHOT_VOLUME_MODES:
        _render("--set", f"workspaces.snapshotVolumes.mode={mode}")
    refused = _render("--set", "workspaces.snapshotVolumes.mode=volumeSnapshot", check=False)
    assert refused.returncode != 0 and "snapshotVolumes" in refused.stderr


def test_a_sites_block_provisioners_reach_the_operator_and_bad_ones_are_refused(tmp_path: Path) -> None:
    objects = _objects(
        "--set", "workspaces.snapshotVolumes.mode=shared",
        "--set", "workspaces.snapshotVolumes.blockProvisioners={san.example.org/iscsi}",
    )  # fmt: skip
    settings = load_settings(str(mounted_settings(objects, tmp_path)))
    assert settings.snapshot_block_provisioners == ("san.example.org/iscsi",)
    assert _settings(_objects())["snapshotBlockProvisioners"] == []
    refused = _render("--set", "workspaces.snapshotVolumes.blockProvisioners=ebs", check=False)
    assert refused.returncode != 0 and "blockProvisioners" in refused.stderr


def test_a_volume_snapshot_class_grants_snapshots_and_holds_contents_with_a_policy(tmp_path: Path) -> None:
    objects = _objects(
        "--set", "workspaces.snapshotVolumes.mode=shared",
        "--set", "workspaces.snapshotVolumes.volumeSnapshotClass=ebs-snapshots",
    )  # fmt: skip
    assert (
        load_settings(str(mounted_settings(objects, tmp_path))).snapshot_volume_snapshot_class
        == "ebs-snapshots"
    )
    assert sorted(_rules_on(objects, "volumesnapshotcontents")) == [
        ("ClusterRole", None, ("get", "list", "create", "delete"))
    ]
    assert sorted(_rules_on(objects, "volumesnapshots")) == [
        ("ClusterRole", None, ("get", "create", "delete")),
        ("Role", "cleanroom-snapshots", ("get", "create", "delete")),
    ]
    policy = next(
        o
        for o in objects
        if o["kind"] == "ValidatingAdmissionPolicy"
        and o["metadata"]["name"].endswith("operator-snapshot-contents")
    )
    rule = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "!has(object.spec.source.volumeHandle)" in rule and '"ebs-snapshots"' in rule
    assert "DELETE" in policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"]
    # Without a class (or in the copy mode) nothing about snapshots is granted.
    for values in ((), ("--set", "workspaces.snapshotVolumes.mode=shared")):
        plain = _objects(*values)
        assert not _rules_on(plain, "volumesnapshotcontents") and not _rules_on(plain, "volumesnapshots")
    refused = _render("--set", "workspaces.snapshotVolumes.volumeSnapshotClass=Bad_Name", check=False)
    assert refused.returncode != 0 and "volumeSnapshotClass" in refused.stderr
