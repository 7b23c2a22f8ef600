"""The export copy Job is hardened like the materializer: what the chart's admission policy demands of the
operator's pods, and the home volume read-only."""

from __future__ import annotations

import re

from cleanroom.airlock.manifests import (
    ExportRef,
    build_copy_job,
    build_copy_network_policy,
    build_upload_secret,
    export_object_name,
)
from cleanroom.workspaces.settings import WorkspaceSettings

REF = ExportRef("paper", "prostate-ai", "uid-1", "seg", "prostate")
SETTINGS = WorkspaceSettings()


def test_the_copy_job_is_hardened_and_mounts_the_home_read_only() -> None:
    pod = build_copy_job(REF, SETTINGS, node="real-0")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert not pod["hostNetwork"] and not pod["hostPID"] and not pod["hostIPC"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert (
        security["readOnlyRootFilesystem"] is True and security["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert container["image"] == SETTINGS.materializer_image
    assert container["volumeMounts"] == [{"name": "home", "mountPath": "/home/jovyan", "readOnly": True}]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "ws-seg-home", "readOnly": True}
    # The home volume is ReadWriteOnce: beside a running notebook, only on its node.
    assert pod["nodeSelector"]["kubernetes.io/hostname"] == "real-0"


def test_the_copy_reads_only_its_own_upload_secret_as_the_policy_admits() -> None:
    job = build_copy_job(REF, SETTINGS)
    (env,) = job["spec"]["template"]["spec"]["containers"][0]["env"]
    secret = env["valueFrom"]["secretKeyRef"]["name"]
    assert re.fullmatch(r"(ws-.+-(hub|reader)|xr-.+-upload)", secret)
    assert build_upload_secret(REF, "https://s3/grant")["metadata"]["name"] == secret
    assert set(build_upload_secret(REF, "u")["stringData"]) == {"grantUrl"}
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ExportRequest"


def test_the_copy_reaches_only_the_store_and_dns() -> None:
    policy = build_copy_network_policy(REF, SETTINGS)["spec"]
    assert policy["ingress"] == [] and len(policy["egress"]) == 2


def test_long_names_fit_a_label() -> None:
    name = export_object_name("x" * 80, "upload")
    assert len(name) <= 63 and name.endswith("-upload") and name.startswith("xr-")
