"""The chart's airlock wiring, rendered by `helm template` (no cluster): released files go to a bucket of their
own, the hub signs download links with a key of that bucket only (never the snapshot store's keys), the
bundled S3 server keeps that key an account of the outbox, and the copy and check Jobs may reach the bundled
server.
tests/deployed/test_airlock.py runs it on the real node."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cleanroom.airlock.manifests import ExportRef, build_check_job, check_labels, copy_labels
from cleanroom.workspaces.settings import WorkspaceSettings, load_settings
from tests.unit.test_chart_metrics import (
    CHART,
    FULL,
    HELM,
    NAMESPACE,
    RELEASE,
    VERSIONS,
    container,
    egress_rules,
    ingress_rules,
    mounted_settings,
    one,
    render,
)

pytestmark = pytest.mark.skipif(
    not HELM.exists(), reason=f"helm is not built yet ({HELM}): hack/build-binaries.sh helm"
)
ENDPOINT = "https://outbox.s3.example.org"


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec.get("env") or []}


def secret_refs(spec: dict[str, Any]) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in spec.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }


def s3_containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    spec = one(objects, "Deployment", f"{FULL}-s3")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def refused(*args: str) -> str:
    out = subprocess.run(
        [str(HELM), "template", RELEASE, str(CHART), "-n", NAMESPACE,
         "--kube-version", VERSIONS["K8S_VERSION"].lstrip("v"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode != 0, "rendered"
    return out.stderr


def test_the_operator_releases_to_the_outbox_bucket_apart_from_the_snapshots() -> None:
    env = env_of(container(render(), f"{FULL}-operator"))
    assert env["CLEANROOM_EXPORT_OUTBOX_BUCKET"] == "cleanroom-exports"
    assert env["CLEANROOM_SNAPSHOT_BUCKET"] == "cleanroom-snapshots"
    assert (
        env_of(container(render(**{"exports.outboxBucket": "site-results"}), f"{FULL}-operator"))[
            "CLEANROOM_EXPORT_OUTBOX_BUCKET"
        ]
        == "site-results"
    )


def test_an_outbox_in_the_snapshot_bucket_is_refused() -> None:
    assert "must differ from snapshots.bucket" in refused("--set", "exports.outboxBucket=cleanroom-snapshots")


def test_the_check_jobs_limits_are_the_charts_values(tmp_path: Path) -> None:
    ref = ExportRef("paper", "prostate-ai", "uid-1", "seg", "prostate")
    defaults = WorkspaceSettings()
    for values, cpu, memory in (
        ({}, defaults.export_check_cpu, defaults.export_check_memory),
        ({"exports.check.cpu": "500m", "exports.check.memory": "4Gi"}, "500m", "4Gi"),
    ):
        config = mounted_settings(render(**values), tmp_path)
        (check,) = build_check_job(ref, load_settings(str(config)))["spec"]["template"]["spec"]["containers"]
        assert check["resources"]["limits"] == {"cpu": cpu, "memory": memory}


def test_a_check_limit_that_is_not_a_quantity_is_refused() -> None:
    assert "/exports/check/memory': 'lots' does not match pattern" in refused(
        "--set", "exports.check.memory=lots"
    )


def test_without_a_download_endpoint_the_hub_holds_no_store_key() -> None:
    hub = container(render(), f"{FULL}-hub")
    assert not [n for n in env_of(hub) if n.startswith("CLEANROOM_HUB_EXPORT_")]
    assert not [r for r in secret_refs(hub) if "s3" in r or "snapshot" in r or "export" in r]


def test_the_hub_signs_links_with_the_outbox_readers_key_never_a_snapshot_key() -> None:
    objects = render(
        **{"exports.download.endpoint": ENDPOINT, "exports.download.readerSecret": "site-outbox"}
    )
    hub = container(objects, f"{FULL}-hub")
    env = env_of(hub)
    assert env["CLEANROOM_HUB_EXPORT_ENDPOINT"] == ENDPOINT
    assert env["CLEANROOM_HUB_EXPORT_BUCKET"] == "cleanroom-exports"
    assert env["CLEANROOM_HUB_EXPORT_LINK_SECONDS"] == "300"
    for name in ("CLEANROOM_HUB_EXPORT_ACCESS_KEY", "CLEANROOM_HUB_EXPORT_SECRET_KEY"):
        assert env[name]["secretKeyRef"]["name"] == "site-outbox"
    # The snapshot store's writer and reader keys stay with the operator.
    assert not secret_refs(hub) & {
        "cleanroom-snapshot-writer",
        "cleanroom-snapshot-reader",
        "cleanroom-s3-root",
    }


def test_a_download_endpoint_without_a_reader_key_is_refused_outside_the_bundled_server() -> None:
    assert "needs exports.download.readerSecret" in refused("--set", f"exports.download.endpoint={ENDPOINT}")


def test_the_bundled_server_keeps_the_hubs_key_an_account_of_the_outbox_only() -> None:
    objects = render(**{"s3.bundled.enabled": True, "exports.download.endpoint": ENDPOINT})
    reader = f"{FULL}-export-reader"
    secret = one(objects, "Secret", reader)
    assert set(secret["data"]) == {"accessKey", "secretKey"}
    hub = container(objects, f"{FULL}-hub")
    assert secret_refs(hub) & {reader, "cleanroom-s3-root"} == {reader}
    containers = s3_containers(objects)
    args = containers["s3"]["args"]
    # Accounts besides root need the server's internal IAM, kept on its volume.
    assert args[args.index("--iam-dir") + 1].startswith("/data/")
    keeper = containers["outbox-reader"]
    assert keeper["args"][0] == "export-outbox-reader"
    assert keeper["args"][keeper["args"].index("--bucket") + 1] == "cleanroom-exports"
    assert secret_refs(keeper) == {reader, "cleanroom-s3-root"}


def test_no_reader_account_without_the_bundled_server() -> None:
    objects = render(
        **{"exports.download.endpoint": ENDPOINT, "exports.download.readerSecret": "site-outbox"}
    )
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULL}-export-reader"]


def test_the_bundled_server_admits_the_export_copy_and_the_hub_never_reaches_the_store() -> None:
    objects = render(**{"s3.bundled.enabled": True, "exports.download.endpoint": ENDPOINT})
    # The copy and check Jobs' pods as the operator labels them (airlock.manifests), in any workspace
    # namespace.
    ref = ExportRef("xr", "team", "uid", "ws", "ds")
    for job, labels in (("copy", copy_labels(ref)), ("check", check_labels(ref))):
        admitted = [
            peer
            for rule in ingress_rules(objects)[f"{FULL}-s3"]
            for peer in rule.get("from", [])
            if peer.get("namespaceSelector") == {}
            and all(labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
        ]
        assert admitted, f"the bundled S3 server refuses the export {job} Job"
    # The hub signs links and the browser fetches: no rule of the hub's reaches the store's port or pod.
    hub_egress = egress_rules(objects)[f"{FULL}-hub"]
    assert not [
        r
        for r in hub_egress
        if "cleanroom-s3" in str(r["to"]) or {"protocol": "TCP", "port": 7070} in r["ports"]
    ]
