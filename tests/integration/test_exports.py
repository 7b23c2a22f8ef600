"""The airlock end to end on the real stack: the operator under test, the real API server and the real S3
server. The copy and check Jobs' pods land on a simulated node here (nothing executes there), so the test
does what their containers do, with the grant URL from each Job's own Secret: `airlock.copy.
copy_to_quarantine` over a home folder of real files, and `cleanroom airlock-check` (the checks against the
snapshot's real DICOM). Everything else (verification into quarantine, the check Job and the judging of its
result, the two-person rule, the release, the deletion, the audit trail) is the operator's.

Decisions are written as an admin here: who may write which decision is admission's part
(test_export_admission.py); what counts is the operator's, tested here."""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import yaml
from PIL import Image
from pydicom.data import get_testdata_file

from cleanroom._clients.presign import Signer, presigned_get
from cleanroom.airlock.checker import CHECK_GRANT_VARIABLE, check_quarantine
from cleanroom.airlock.copy import copy_to_quarantine
from cleanroom.airlock.manifests import CHECK_DEADLINE_SECONDS
from cleanroom.workspaces.settings import WorkspaceSettings
from tests.integration.conftest import ROOT, Kubectl, OperatorProcess, s3_env
from tests.integration.test_dataset_ingest import s3_client
from tests.integration.test_workspaces import (
    condition,
    dataset,  # noqa: F401  (the module's Dataset)
    events,
    requester,
    workspace,
)

STEWARDS, OFFICERS = "prostate-stewards", "cleanroom:security-officers"
BUCKET = "cleanroom-snapshots"
OUTBOX = "cleanroom-exports"  # the operator's CLEANROOM_EXPORT_OUTBOX_BUCKET (conftest)
METRICS = b"fold,dice,hausdorff95\n1,0.871,4.2\n2,0.858,4.9\n"


@pytest.fixture(scope="module")
def exported_dataset(dataset: str, kubectl: Kubectl) -> str:  # noqa: F811
    """The module's Dataset, with a steward group (the CRD of ExportRequests installed as `make crds` would)."""
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds/cleanroom.dev_exportrequests.yaml"))
    kubectl.run("wait", "--for=condition=Established", "crd/exportrequests.cleanroom.dev", "--timeout=60s")
    kubectl.run("patch", "dataset", dataset, "--type=merge", "-p",
                json.dumps({"spec": {"export": {"stewardGroup": STEWARDS}}}))  # fmt: skip
    return dataset


@pytest.fixture
def seg(exported_dataset: str, kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A started Workspace whose users include the suite's own user (the requester)."""
    kubectl.apply(
        workspace("seg", exported_dataset, users=["alice@hospital.example", requester()]), "-n", namespace
    )
    kubectl.wait_for(lambda w: (w.get("status") or {}).get("snapshot", {}).get("digest"), "workspace", "seg",
                     "-n", namespace, timeout=120)  # fmt: skip
    yield "seg"


def ask(kubectl: Kubectl, namespace: str, files: list[str]) -> str:
    name = f"x-{uuid.uuid4().hex[:6]}"
    kubectl.apply(
        {
            "apiVersion": "cleanroom.dev/v1alpha1",
            "kind": "ExportRequest",
            "metadata": {"name": name, "annotations": {"cleanroom.dev/requested-by": requester()}},
            "spec": {
                "workspace": "seg",
                "files": files,
                "justification": "Aggregate Dice per fold for table 2",
            },
        },
        "-n",
        namespace,
    )
    return name


def run_the_copy_job(kubectl: Kubectl, namespace: str, name: str, home: Path) -> None:
    """What the copy Job's container does, with the grant from its Secret."""
    secret = kubectl.wait_for(lambda s: "grantUrl" in (s.get("data") or {}), "secret", f"xr-{name}-upload",
                              "-n", namespace, timeout=60)  # fmt: skip
    job = kubectl.get("job", f"xr-{name}-copy", "-n", namespace)
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "ws-seg-home",
        "readOnly": True,
    }
    copy_to_quarantine(base64.b64decode(secret["data"]["grantUrl"]).decode(), home)


def check_grant(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    """The grant URL from the check Job's own Secret, once the operator started the check; None when the
    request was judged without a check Job (what the operator did before the checks ran in a Job)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = kubectl.run("get", "secret", f"xr-{name}-check", "-n", namespace, "-o", "json", check=False)
        grant = json.loads(found.stdout).get("data", {}).get("grantUrl") if found.returncode == 0 else None
        if grant:
            job = kubectl.get("job", f"xr-{name}-check", "-n", namespace)
            pod = job["spec"]["template"]["spec"]
            assert "volumes" not in pod and pod["automountServiceAccountToken"] is False
            return base64.b64decode(grant).decode()
        if (export(kubectl, namespace, name).get("status") or {}).get("phase") not in (
            None,
            "Copying",
            "Checking",
        ):
            return None
        time.sleep(1)
    raise AssertionError(f"no check Job for {name}")


def run_the_check_job(kubectl: Kubectl, namespace: str, name: str) -> None:
    """What the check Job's container does, with the grant from its Secret."""
    grant = check_grant(kubectl, namespace, name)
    assert grant is not None, f"{name} was judged without a check Job"
    check_quarantine(grant)


def run_the_checker_confined(grant: str) -> subprocess.CompletedProcess[str]:
    """`cleanroom airlock-check` as the check Job runs it: its own process, no more address space than the
    Job's memory limit, no longer than its deadline."""
    limit = quantity_bytes(WorkspaceSettings().export_check_memory)
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "airlock-check"],
        env={**os.environ, CHECK_GRANT_VARIABLE: grant, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        capture_output=True,
        text=True,
        timeout=CHECK_DEADLINE_SECONDS,
    )


def quantity_bytes(quantity: str) -> int:
    """A memory quantity in bytes, for the binary suffixes the settings use (2048Mi, 4Gi)."""
    for suffix, shift in (("Ki", 10), ("Mi", 20), ("Gi", 30)):
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) << shift
    return int(quantity)


def bomb_png(side: int) -> bytes:
    """A grey PNG of side x side black pixels: a few hundred kilobytes that decode to side² bytes, under
    Pillow's decompression-bomb limit as the checks set it, and many times that once the checks hash it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte 0, then the row
    pixels = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def peak_memory_mib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) // 1024


def export(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kubectl.get("exportrequest", name, "-n", namespace)


def wait_phase(
    kubectl: Kubectl, namespace: str, name: str, *phases: str, timeout: int = 120
) -> dict[str, Any]:
    return kubectl.wait_for(lambda x: (x.get("status") or {}).get("phase") in phases, "exportrequest", name,
                            "-n", namespace, timeout=timeout)  # fmt: skip


def decide(
    kubectl: Kubectl, namespace: str, name: str, by: str, role: str, *groups: str, verdict: str = "Approve"
) -> subprocess.CompletedProcess[str]:
    """Append ``by``'s decision as ``by`` (impersonated, with ``groups``), as `cleanroom export-decide` does."""
    entry = {
        "by": by,
        "groups": list(groups),
        "role": role,
        "verdict": verdict,
        "reason": "looked at every file",
    }
    decisions = export(kubectl, namespace, name)["spec"].get("decisions") or []
    patch = [{"op": "add", "path": "/spec/decisions", "value": [*decisions, entry]}]
    args = ["patch", "exportrequest", name, "-n", namespace, "--type=json", "-p", json.dumps(patch)]
    if by != requester():
        args += ["--as", by, *(f"--as-group={g}" for g in groups)]
    return kubectl.run(*args, check=False)


def approvers_may_decide(kubectl: Kubectl, namespace: str, *people: str) -> None:
    """The namespace's RBAC lets the approvers write its ExportRequests (admission judges what they write)."""
    kubectl.run("create", "role", "export-approvers", "-n", namespace, "--verb=get,patch",
                "--resource=exportrequests.cleanroom.dev")  # fmt: skip
    kubectl.run("create", "rolebinding", "export-approvers", "-n", namespace, "--role=export-approvers",
                *(f"--user={p}" for p in people))  # fmt: skip


def objects(prefix: str, bucket: str = BUCKET) -> list[str]:
    client = s3_client()
    if not client.bucket_exists(bucket):
        return []
    return sorted(str(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True))


def test_two_approvals_release_and_the_requester_downloads(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, seg: str, tmp_path: Path
) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results/metrics.csv").write_bytes(METRICS)
    name = ask(kubectl, namespace, ["results/metrics.csv"])
    run_the_copy_job(kubectl, namespace, name, tmp_path)
    run_the_check_job(kubectl, namespace, name)
    body = wait_phase(kubectl, namespace, name, "AwaitingApproval", "Rejected", "Failed")
    assert body["status"]["phase"] == "AwaitingApproval", json.dumps(body["status"], indent=1)
    assert (
        condition(body, "Quarantined")["status"] == "True" and condition(body, "Checked")["status"] == "True"
    )
    checks = {c["name"]: c for c in body["status"]["checks"]}
    assert set(checks) == {"NoDicom", "NoSnapshotData", "NoIdentifiers", "ExportPolicy"}
    assert all(c["passed"] and c["lookedAt"] for c in checks.values())
    uid = body["metadata"]["uid"]
    prefix = f"exports/{namespace}/{name}/{uid}/"
    assert f"{prefix}quarantine/manifest.json" in objects(prefix)
    approvers_may_decide(kubectl, namespace, "bob@hospital.example", "olga@hospital.example")
    # The requester's own approval does not count, whatever groups it lists; where the chart's admission
    # policy is installed it does not even get in.
    own = decide(kubectl, namespace, name, requester(), "SecurityOfficer", STEWARDS, OFFICERS)
    admitted = own.returncode == 0
    assert admitted or "the requester of an export cannot decide" in own.stderr, own.stderr
    # One approval does not release.
    assert decide(kubectl, namespace, name, "bob@hospital.example", "DataSteward", STEWARDS).returncode == 0
    expected = [False, True] if admitted else [True]
    body = kubectl.wait_for(lambda x: len(x["status"].get("decisions") or []) == len(expected), "exportrequest",
                            name, "-n", namespace)  # fmt: skip
    assert body["status"]["phase"] == "AwaitingApproval"
    assert [d["counted"] for d in body["status"]["decisions"]] == expected
    assert objects(prefix, OUTBOX) == []
    assert (
        decide(kubectl, namespace, name, "olga@hospital.example", "SecurityOfficer", OFFICERS).returncode == 0
    )
    kubectl.run("wait", "--for=condition=Released", f"exportrequest/{name}", "-n", namespace, "--timeout=60s")
    body = export(kubectl, namespace, name)
    assert (
        "bob@hospital.example (DataSteward) and olga@hospital.example (SecurityOfficer)"
        in condition(body, "Approved")["message"]
    )
    # The hub's link to the released file, signed as the hub signs it, served by the real S3 server.
    env = s3_env()
    signer = Signer(env["S3_ENDPOINT"], OUTBOX, env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"])
    url = presigned_get(signer, body["status"]["outbox"] + "results/metrics.csv", timedelta(minutes=5))
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == METRICS
    actions = [e["action"] for e in events(workspace="seg") if e["resources"].get("export") == name]
    for action in (
        "export.requested",
        "export.copied",
        "export.checked",
        "export.decided",
        "export.released",
    ):
        assert action in actions, actions
    assert actions.count("export.decided") == len(expected) + 1
    # Deleting the request deletes its copies, the released file included, and says so in the trail.
    kubectl.run("delete", "exportrequest", name, "-n", namespace)
    deadline = time.monotonic() + 30
    while (objects(prefix) or objects(prefix, OUTBOX)) and time.monotonic() < deadline:
        time.sleep(1)
    assert objects(prefix) == [] and objects(prefix, OUTBOX) == []
    deleted = [e for e in events(workspace="seg") if e["resources"].get("export") == name]
    assert "export.deleted" in [e["action"] for e in deleted]


def test_a_scan_in_disguise_is_rejected_and_its_copies_deleted(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, seg: str, tmp_path: Path
) -> None:
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "features.npy").write_bytes(ct)  # the raw DICOM, renamed
    pixels = pydicom.dcmread(io.BytesIO(ct)).pixel_array.astype(np.float64)
    grey = ((pixels - pixels.min()) / np.ptp(pixels) * 255).astype(np.uint8)
    Image.fromarray(grey).resize((64, 64)).save(tmp_path / "thumbnail.png")
    name = ask(kubectl, namespace, ["features.npy", "thumbnail.png"])
    run_the_copy_job(kubectl, namespace, name, tmp_path)
    run_the_check_job(kubectl, namespace, name)
    kubectl.run(
        "wait", "--for=condition=Rejected", f"exportrequest/{name}", "-n", namespace, "--timeout=120s"
    )
    body = export(kubectl, namespace, name)
    assert condition(body, "Rejected")["reason"] == "ChecksFailed"
    findings = json.dumps(body["status"]["checks"])
    assert "DICM magic" in findings and "thumbnail.png" in findings
    uid = body["metadata"]["uid"]
    deadline = time.monotonic() + 30
    while objects(f"exports/{namespace}/{name}/{uid}/") and time.monotonic() < deadline:
        time.sleep(1)
    assert objects(f"exports/{namespace}/{name}/{uid}/") == []
    assert kubectl.run("get", "job", f"xr-{name}-copy", "-n", namespace, check=False).returncode != 0
    assert kubectl.run("get", "job", f"xr-{name}-check", "-n", namespace, check=False).returncode != 0
    actions = [e["action"] for e in events(workspace="seg") if e["resources"].get("export") == name]
    assert "export.rejected" in actions and "export.deleted" in actions


def test_a_decompression_bomb_is_rejected_and_the_operator_never_decodes_it(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, seg: str, tmp_path: Path
) -> None:
    """A 12,000 x 12,000 black PNG of a few hundred kilobytes passes Pillow's bomb limit as the checks set it
    and takes gigabytes to judge. Judged inside the operator, its memory grows by that much (over the
    chart's 2Gi limit: the operator pod is killed, and again at each restart while the request waits),
    and the harmless picture passes. Judged in the check Job, the checker runs out of memory and leaves no
    result, and the request is rejected; the operator never holds the decoded pixels."""
    (tmp_path / "figure.png").write_bytes(bomb_png(12_000))
    name = ask(kubectl, namespace, ["figure.png"])
    before = peak_memory_mib(operator.process.pid)
    run_the_copy_job(kubectl, namespace, name, tmp_path)
    grant = check_grant(kubectl, namespace, name)
    if grant is not None:
        checker = run_the_checker_confined(grant)
        assert checker.returncode != 0 and "MemoryError" in checker.stderr, checker.stderr[-2000:]
    body = wait_phase(kubectl, namespace, name, "AwaitingApproval", "Rejected", "Failed", timeout=900)
    grown = peak_memory_mib(operator.process.pid) - before
    assert operator.process.poll() is None
    assert grown < 200, f"the operator's peak memory grew by {grown} MiB judging one export"
    assert body["status"]["phase"] == "Rejected", json.dumps(body["status"], indent=1)
    rejected = condition(body, "Rejected")
    # Where nothing runs (this suite's nodes), the Job ends without the result; on a node, the kernel's
    # OOMKilled ends it (tests/deployed/test_airlock.py).
    assert rejected["reason"] == "CheckerFailed" and "without writing its result" in rejected["message"]
    assert condition(body, "Checked")["status"] == "False" and "checks" not in body["status"]
    uid = body["metadata"]["uid"]
    deadline = time.monotonic() + 30
    while objects(f"exports/{namespace}/{name}/{uid}/") and time.monotonic() < deadline:
        time.sleep(1)
    assert objects(f"exports/{namespace}/{name}/{uid}/") == []
    steps = {
        (e["action"], e["outcome"]) for e in events(workspace="seg") if e["resources"].get("export") == name
    }
    assert {("export.checked", "failure"), ("export.rejected", "denied")} <= steps


def test_a_replayed_pass_of_another_export_is_not_taken(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, seg: str, tmp_path: Path
) -> None:
    """A checker taken over by a file holds its grant's result URL: it writes there the genuine passing
    result of another export (a CSV of metrics) for a scan renamed .npy. It names another request and
    other files, so the operator rejects the request instead of passing the scan on to the approvers."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results/metrics.csv").write_bytes(METRICS)
    genuine = ask(kubectl, namespace, ["results/metrics.csv"])
    run_the_copy_job(kubectl, namespace, genuine, tmp_path)
    run_the_check_job(kubectl, namespace, genuine)
    assert wait_phase(kubectl, namespace, genuine, "AwaitingApproval", "Rejected")["status"]["phase"] == (
        "AwaitingApproval"
    )
    uid = export(kubectl, namespace, genuine)["metadata"]["uid"]
    passing = s3_client().get_object(BUCKET, f"exports/{namespace}/{genuine}/{uid}/check/result.json").read()
    (tmp_path / "results/features.npy").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    name = ask(kubectl, namespace, ["results/features.npy"])
    run_the_copy_job(kubectl, namespace, name, tmp_path)
    grant = check_grant(kubectl, namespace, name)
    assert grant is not None
    with urllib.request.urlopen(grant, timeout=30) as response:
        result_url = json.loads(response.read())["result"]
    urllib.request.urlopen(urllib.request.Request(result_url, data=passing, method="PUT"), timeout=30).close()
    body = wait_phase(kubectl, namespace, name, "AwaitingApproval", "Rejected", "Failed")
    assert body["status"]["phase"] == "Rejected", json.dumps(body["status"], indent=1)
    rejected = condition(body, "Rejected")
    assert rejected["reason"] == "CheckResultInvalid" and "another request" in rejected["message"]


def test_a_request_from_someone_not_using_the_workspace_copies_nothing(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, seg: str
) -> None:
    """Mallory may write ExportRequests in the namespace (RBAC) but is not a user of the Workspace."""
    mallory = "mallory@elsewhere.example"
    kubectl.run("create", "role", "export-writer", "-n", namespace, "--verb=create,get",
                "--resource=exportrequests.cleanroom.dev")  # fmt: skip
    kubectl.run(
        "create", "rolebinding", "mallory", "-n", namespace, "--role=export-writer", f"--user={mallory}"
    )
    name = f"x-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "ExportRequest",
        "metadata": {"name": name, "annotations": {"cleanroom.dev/requested-by": mallory}},
        "spec": {"workspace": "seg", "files": ["a.csv"], "justification": "I would like these files please"},
    }
    kubectl.run("create", "-n", namespace, "-f", "-", "--as", mallory, stdin=json.dumps(body))
    kubectl.run("wait", "--for=condition=Rejected", f"exportrequest/{name}", "-n", namespace, "--timeout=60s")
    assert condition(export(kubectl, namespace, name), "Rejected")["reason"] == "NotAUser"
    assert kubectl.run("get", "secret", f"xr-{name}-upload", "-n", namespace, check=False).returncode != 0


def test_an_approver_decides_with_cleanroom_export_decide(
    operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,
    seg: str,
    exported_dataset: str,
    tmp_path: Path,
) -> None:
    """The approver's command, with credentials of their own: here a service account whose group the
    Dataset names as its stewards (a person's come from the identity provider). By and groups are filled
    from the API server's SelfSubjectReview, never typed."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results/metrics.csv").write_bytes(METRICS)
    name = ask(kubectl, namespace, ["results/metrics.csv"])
    run_the_copy_job(kubectl, namespace, name, tmp_path)
    run_the_check_job(kubectl, namespace, name)
    wait_phase(kubectl, namespace, name, "AwaitingApproval")
    stewards = f"system:serviceaccounts:{namespace}"
    kubectl.run("patch", "dataset", exported_dataset, "--type=merge", "-p",
                json.dumps({"spec": {"export": {"stewardGroup": stewards}}}))  # fmt: skip
    try:
        kubectl.run("create", "serviceaccount", "steward", "-n", namespace)
        kubectl.run("create", "role", "decide", "-n", namespace, "--verb=get,patch",
                    "--resource=exportrequests.cleanroom.dev")  # fmt: skip
        kubectl.run("create", "rolebinding", "decide", "-n", namespace, "--role=decide",
                    f"--serviceaccount={namespace}:steward")  # fmt: skip
        token = kubectl.run("create", "token", "steward", "-n", namespace).stdout.strip()
        config = yaml.safe_load(kubectl.run("config", "view", "--minify", "--raw").stdout)
        config["users"][0]["user"] = {"token": token}
        kubeconfig = tmp_path / "steward.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [sys.executable, "-m", "cleanroom.cli", "export-decide", name, "-n", namespace, "--role", "DataSteward",
             "--approve", "--reason", "aggregate scores per fold, no per-patient values"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        body = kubectl.wait_for(lambda x: (x["status"].get("decisions") or [{}])[0].get("counted"), "exportrequest",
                                name, "-n", namespace)  # fmt: skip
        [decision] = body["spec"]["decisions"]
        assert (
            decision["by"] == f"system:serviceaccount:{namespace}:steward" and stewards in decision["groups"]
        )
        assert body["status"]["phase"] == "AwaitingApproval"  # one approval does not release
    finally:
        kubectl.run("patch", "dataset", exported_dataset, "--type=merge", "-p",
                    json.dumps({"spec": {"export": {"stewardGroup": STEWARDS}}}))  # fmt: skip
