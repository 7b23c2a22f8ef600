"""The export copy and check Jobs are hardened like the materializer: what the chart's admission policy
demands of the operator's pods, the home volume read-only for the copy and no volume at all for the check,
which is bounded in memory, CPU and time."""

from __future__ import annotations

import re

from cleanroom.airlock.checker import UNREACHABLE_EXIT
from cleanroom.airlock.manifests import (
    CHECK_DEADLINE_SECONDS,
    ExportRef,
    build_check_job,
    build_check_network_policy,
    build_check_secret,
    build_copy_job,
    build_copy_network_policy,
    build_upload_secret,
    check_labels,
    check_objects,
    export_object_name,
)
from cleanroom.workspaces.settings import WorkspaceSettings
from tests.unit.test_chart_metrics import ROOT

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


# -- the check Job ----------------------------------------------------------------------------------------------


def test_the_check_job_is_hardened_bounded_and_mounts_nothing() -> None:
    job = build_check_job(REF, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert "serviceAccountName" not in pod and not pod["hostNetwork"] and not pod["hostPID"]
    assert "volumes" not in pod and "volumeMounts" not in container
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == SETTINGS.materializer_image and container["args"] == ["airlock-check"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2048Mi"}
    assert job["spec"]["activeDeadlineSeconds"] == CHECK_DEADLINE_SECONDS
    # Only an unreachable store is tried again: a file that kills the checker fails the Job at once.
    (rule,) = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"] == {
        "containerName": "check",
        "operator": "NotIn",
        "values": [UNREACHABLE_EXIT],
    }
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ExportRequest"


def test_the_check_reads_only_its_own_grant_secret_as_the_chart_admits() -> None:
    chart = (ROOT / "charts/cleanroom/templates/admission-policies.yaml").read_text()
    patterns = re.findall(r"name\.matches\('(\^\(.*?\)\$)'\)", chart)
    assert len(patterns) == 3, patterns
    job = build_check_job(REF, SETTINGS)
    secret = next(
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    )
    assert build_check_secret(REF, "https://s3/grant")["metadata"]["name"] == secret
    assert set(build_check_secret(REF, "u")["stringData"]) == {"grantUrl"}
    # The pod may read it, and the operator may write it.
    assert all(re.fullmatch(p, secret) for p in patterns), (secret, patterns)


def test_the_check_reaches_only_the_store_and_dns_and_nothing_reaches_it() -> None:
    policy = build_check_network_policy(REF, SETTINGS)["spec"]
    assert (
        policy["ingress"] == []
        and policy["egress"] == build_copy_network_policy(REF, SETTINGS)["spec"]["egress"]
    )
    assert policy["podSelector"]["matchLabels"] == check_labels(REF)
    assert check_labels(REF)["app.kubernetes.io/component"] == "export-check"
    assert [o[2] for o in check_objects(REF)] == ["xr-paper-check"] * 3
