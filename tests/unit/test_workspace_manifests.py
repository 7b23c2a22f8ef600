"""The notebook pod, its volumes and its NetworkPolicies carry every protection the security model claims.

Each test fails if the protection it names is removed from the builders.
"""

from __future__ import annotations

from typing import Any

import pytest

from cleanroom.api import WorkspaceSpec, decode
from cleanroom.workspaces import (
    WorkspaceRef,
    WorkspaceSettings,
    build_notebook_network_policy,
    build_notebook_pod,
    load_settings,
    object_name,
)
from cleanroom.workspaces.manifests import (
    build_materializer_job,
    build_materializer_network_policy,
    build_namespace_guards,
    build_reader_secret,
    snapshot_volume_size,
)

REF = WorkspaceRef(
    name="seg", namespace="team", uid="uid-1", snapshot="sha256:" + "a" * 64, dataset="prostate"
)
SETTINGS = WorkspaceSettings()


def spec(**resources: Any) -> WorkspaceSpec:
    return decode(
        WorkspaceSpec,
        {
            "dataset": {"name": "prostate"},
            "users": ["alice@hospital.example"],
            "purpose": "Train a lesion segmentation model",
            "image": "registry.example.org/cleanroom/notebook:1",
            "resources": {"gpu": 1, "gpuType": "nvidia-a100-80gb", "cpu": "8", "memory": "64Gi", **resources},
        },
    )


def pod(**resources: Any) -> dict[str, Any]:
    labels = SETTINGS.node_labels_for(spec(**resources).resources.gpu_type) or {}
    return build_notebook_pod(REF, spec(**resources), SETTINGS, labels)


def notebook(manifest: dict[str, Any]) -> dict[str, Any]:
    """The notebook container (the pod's other container is the byte meter: test_notebook_pod.py)."""
    names = [c["name"] for c in manifest["spec"]["containers"]]
    assert names == ["notebook", "meter"], names
    return dict(manifest["spec"]["containers"][0])


def test_workspace_pod_has_no_service_account_token() -> None:
    assert pod()["spec"]["automountServiceAccountToken"] is False


def test_workspace_pod_uses_no_host_namespaces_or_host_paths() -> None:
    spec_ = pod()["spec"]
    assert spec_["hostNetwork"] is False and spec_["hostPID"] is False and spec_["hostIPC"] is False
    assert all("hostPath" not in volume for volume in spec_["volumes"])
    assert spec_["enableServiceLinks"] is False


def test_workspace_pod_runs_as_non_root_with_runtime_default_seccomp() -> None:
    security = pod()["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_notebook_container_drops_all_capabilities_and_cannot_escalate() -> None:
    security = notebook(pod())["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True


def test_dataset_is_mounted_read_only_at_data() -> None:
    manifest = pod()
    mount = next(m for m in notebook(manifest)["volumeMounts"] if m["mountPath"] == "/data")
    assert mount["readOnly"] is True
    volume = next(v for v in manifest["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True


def test_notebook_container_holds_no_storage_credentials() -> None:
    container = notebook(pod())
    assert all("valueFrom" not in env for env in container["env"])
    # The only Secret it reads is the hub's session settings, never the snapshot store's keys.
    assert container["envFrom"] == [{"secretRef": {"name": "ws-seg-hub", "optional": True}}]
    names = {env["name"] for env in container["env"]}
    assert not {n for n in names if "KEY" in n or "SECRET" in n or "TOKEN" in n}
    assert all("secret" not in volume for volume in pod()["spec"]["volumes"])


def test_writable_paths_are_explicit() -> None:
    mounts = {m["mountPath"]: m for m in notebook(pod())["volumeMounts"]}
    assert set(mounts) == {"/data", "/home/jovyan", "/tmp"}


def test_gpu_limits_selector_and_toleration() -> None:
    manifest = pod()
    assert notebook(manifest)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert manifest["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert manifest["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert notebook(manifest)["resources"]["requests"] == notebook(manifest)["resources"]["limits"]


def test_cpu_only_workspace_gets_no_gpu_and_no_toleration() -> None:
    manifest = build_notebook_pod(REF, spec(gpu=0, gpuType=None), SETTINGS, {})
    assert "nvidia.com/gpu" not in notebook(manifest)["resources"]["limits"]
    assert "tolerations" not in manifest["spec"] and "nodeSelector" not in manifest["spec"]


@pytest.mark.parametrize(
    ("platform", "label"),
    [
        ("gke", "cloud.google.com/gke-accelerator"),
        ("eks", "node.kubernetes.io/instance-type"),
        ("aks", "kubernetes.azure.com/accelerator"),
    ],
)
def test_gpu_type_maps_to_each_cloud_s_node_labels(platform: str, label: str) -> None:
    labels = WorkspaceSettings(gpu_platform=platform).node_labels_for("nvidia-a100-80gb")
    assert labels is not None and label in labels


def test_unknown_gpu_type_is_none() -> None:
    assert SETTINGS.node_labels_for("nvidia-imaginary") is None


def test_notebook_network_policy_allows_egress_only_to_the_hub_api_not_even_dns() -> None:
    policy = build_notebook_network_policy(REF, SETTINGS)
    assert "Egress" in policy["spec"]["policyTypes"]
    [rule] = policy["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8081}]
    [peer] = rule["to"]
    assert "ipBlock" not in peer
    assert peer["podSelector"]["matchLabels"] == dict(SETTINGS.hub_api_labels)
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "cleanroom-system"}


def test_notebook_ingress_only_from_the_hub_proxy_and_the_hub_on_the_notebook_port() -> None:
    policy = build_notebook_network_policy(REF, SETTINGS)
    (rule,) = policy["spec"]["ingress"]
    proxy, hub = rule["from"]
    # The proxy carries the browser's traffic; the hub checks that a started server answers before routing.
    assert proxy["podSelector"]["matchLabels"] == dict(SETTINGS.hub_proxy_labels)
    assert hub["podSelector"]["matchLabels"] == dict(SETTINGS.hub_api_labels)
    for peer in (proxy, hub):
        assert peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": SETTINGS.hub_namespace
        }
    assert rule["ports"] == [{"protocol": "TCP", "port": SETTINGS.notebook_port}]
    assert policy["spec"]["podSelector"]["matchLabels"] == pod()["metadata"]["labels"]


def test_the_materializer_gets_a_read_grant_no_keys_and_only_store_egress() -> None:
    job = build_materializer_job(REF, SETTINGS)
    container = job["spec"]["template"]["spec"]["containers"][0]
    # One variable, from the workspace's reader Secret: the grant URL. No endpoint, bucket or key.
    assert container["env"] == [
        {
            "name": "CLEANROOM_SNAPSHOT_GRANT_URL",
            "valueFrom": {"secretKeyRef": {"name": "ws-seg-reader", "key": "grantUrl"}},
        }
    ]
    assert container["args"] == ["snapshot", "materialize-grant", "/data"]
    secret = build_reader_secret(REF, "https://s3.example/grants/x.json?X-Amz-Signature=f00")
    assert secret["stringData"] == {"grantUrl": "https://s3.example/grants/x.json?X-Amz-Signature=f00"}
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    policy = build_materializer_network_policy(REF, SETTINGS)
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {SETTINGS.snapshot_egress_port, 53, SETTINGS.grant_signer_port}
    # The signer's port only on the signer's own pods, in its own namespace.
    (signer,) = [r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == SETTINGS.grant_signer_port]
    assert signer["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cleanroom-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cleanroom-grant-signer"}},
        }
    ]
    assert policy["spec"]["ingress"] == []


def test_a_signer_ca_file_that_is_not_there_stops_the_operator_at_start(tmp_path: Any) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "workspaces.yaml").write_text(f"grantSignerCaFile: {tmp_path / 'ca.crt'}\n")
    assert load_settings(str(tmp_path / "workspaces.yaml")).grant_signer_ca_file == str(tmp_path / "ca.crt")
    (tmp_path / "workspaces.yaml").write_text(f"grantSignerCaFile: {tmp_path / 'missing.crt'}\n")
    with pytest.raises(ValueError, match="grantSignerCaFile"):
        load_settings(str(tmp_path / "workspaces.yaml"))


def test_a_failed_copy_keeps_its_pod_and_the_message_naming_the_object() -> None:
    """The Workspace says which object failed verification from the failed pod's termination message. With
    restartPolicy OnFailure the Job controller deleted that pod at the back-off limit, and a pass that came
    after found no message (the deployed tamper test failed so, once in two runs); Never keeps failed pods."""
    spec = build_materializer_job(REF, SETTINGS)["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_namespace_default_deny_covers_every_pod() -> None:
    policy, quota, limits = build_namespace_guards("team", SETTINGS)
    assert (
        policy["spec"]["podSelector"] == {}
        and policy["spec"]["egress"] == []
        and policy["spec"]["ingress"] == []
    )
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "8"
    assert limits["spec"]["limits"][0]["type"] == "Container"


def test_every_object_is_owned_by_the_workspace() -> None:
    owner = pod()["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Workspace",
        "name": "seg",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_object_names_are_dns_labels_even_for_long_workspace_names() -> None:
    name = object_name("w" * 200, "materialize")
    assert len(name) <= 63 and name.endswith("-materialize")
    assert object_name("w" * 200, "materialize") == name
    assert object_name("short") == "ws-short"


def test_snapshot_volume_has_room_for_the_snapshot() -> None:
    assert snapshot_volume_size(0) == "1Gi"
    assert snapshot_volume_size(10 * 1024**3) == "12Gi"


def test_every_workspace_pod_goes_to_the_sites_workspace_pool() -> None:
    from cleanroom.workspaces import egress as egress_module
    from cleanroom.workspaces import manifests as m
    from cleanroom.workspaces.settings import WorkspaceSettings

    pool = {"pool": "workspaces"}
    taint = {"key": "pool", "operator": "Equal", "value": "workspaces", "effect": "NoSchedule"}
    settings = WorkspaceSettings(pod_node_selector=pool, pod_tolerations=(taint,))
    placed = m.placement(settings, {"nvidia.com/gpu.product": "X"}, [{"key": "nvidia.com/gpu"}])
    assert placed == {
        "nodeSelector": {"pool": "workspaces", "nvidia.com/gpu.product": "X"},
        "tolerations": [taint, {"key": "nvidia.com/gpu"}],
    }
    assert m.placement(WorkspaceSettings()) == {}
    job = m.build_materializer_job(REF, settings)["spec"]["template"]["spec"]
    assert job["nodeSelector"] == pool and job["tolerations"] == [taint]
    probe = egress_module.build_probe_pod(REF, settings)["spec"]
    assert probe["nodeSelector"] == pool and probe["tolerations"] == [taint]
