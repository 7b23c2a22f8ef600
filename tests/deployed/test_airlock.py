"""The airlock as it runs in the deployed install on the real node: alice, in her running sample Workspace,
asks with `cleanroom export` (her session's server forwards it to the hub, which asks in her name) for a
small CSV of metrics and for a DICOM of the dataset renamed .npy. The copy Job runs on real-0 and copies from
the notebook's own home volume; the DICOM fails the checks and is rejected; the CSV waits for two people.
Attacks first: alice cannot approve her own (even as a steward), nobody decides in another's name or with a
group they lack, one approval releases nothing, the hub's download key reads no quarantined file and no
snapshot, and nobody but alice downloads. Then the officer's approval releases it, alice downloads it from
the hub byte for byte, and the officer finds every step in the audit trail. Last, alice in Chromium saves a
released file from the hub's exports page. Apart: a decompression bomb alice exports kills only its own
check Job's pod (out of memory) and is rejected; the operator, which no longer parses exported files, is
not restarted."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from minio import Minio
from minio.error import S3Error
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.deployed.conftest import (
    ALICE,
    NODE,
    SAMPLE_NS,
    SAMPLE_WS,
    STATE,
    Deployed,
    PortForward,
    _stop_pidfile,
    audit_rows,
    exec_python,
    notebook_pod,
    sign_in_in_browser,
    wait_for,
)
from tests.deployed.hub_session import HubSession
from tests.e2e.conftest import browser, shots
from tests.integration.conftest import ROOT, Kubectl

__all__ = ["browser", "shots"]  # fixtures

STEWARD, STEWARDS = "stella@hospital.example", "sample-stewards"  # examples/dataset.yaml's stewardGroup
OFFICER, OFFICERS = "sam@hospital.example", "cleanroom:security-officers"  # the chart's default
BOB = "bob@hospital.example"
JUSTIFICATION = "Dice per fold of the segmentation model, for table 2 of the paper"

# In the notebook, as alice's kernel would: a CSV of metrics (with bytes of this run, so that only this home
# can hold them), and a DICOM of the read-only dataset copied into the home under a NumPy name.
WRITE_RESULTS = r"""
import hashlib, json, os, shutil
folder = os.path.expanduser("~/results/{run}")
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "metrics.csv"), "w") as f:
    f.write("fold,dice,run\n1,0.871,{run}\n2,0.858,{run}\n")
dicom = next(os.path.join(d, n) for d, _, names in sorted(os.walk("/data")) for n in sorted(names) if n.endswith(".dcm"))
shutil.copyfile(dicom, os.path.join(folder, "slice.npy"))
digest = lambda p: "sha256:" + hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps({{n: digest(os.path.join(folder, n)) for n in ("metrics.csv", "slice.npy")}}))
"""


# A grey PNG of 12,000 x 12,000 black pixels (about 140 kB): under the checks' Pillow bomb limit, and more
# than the check Job's 2 GiB to judge (tests/integration/test_exports.py measures it).
WRITE_BOMB = r"""
import json, os, struct, zlib
folder = os.path.expanduser("~/results/{run}")
os.makedirs(folder, exist_ok=True)
side = 12000
chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
squeeze = zlib.compressobj(9)
pixels = b"".join(squeeze.compress(b"\0" * (side + 1)) for _ in range(side)) + squeeze.flush()
header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
open(os.path.join(folder, "figure.png"), "wb").write(png)
print(json.dumps(len(png)))
"""


@pytest.fixture(scope="module")
def link_store(kubeconfig: str, deployed: Deployed) -> Iterator[str]:
    """The bundled S3 server where download links point (exports.download.endpoint in ci/deployed-values.yaml),
    as a browser reaches it: the suite forwards that port, as an ingress would expose the store."""
    values = yaml.safe_load((ROOT / "charts/cleanroom/ci/deployed-values.yaml").read_text())
    endpoint = str(values["exports"]["download"]["endpoint"]).rstrip("/")
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.socket() as probe:
        taken = probe.connect_ex(("127.0.0.1", port)) == 0
    if taken and not _store_answers(endpoint):
        # make dev's forward (hack/dev.sh) outlived the S3 pod it was bound to (hack/deploy.sh replaced the pod
        # when an image changed): it still listens, and refuses every connection. The suite forwards the port.
        _stop_pidfile(STATE / "s3-forward.pid")
        taken = False
    forward = None if taken else PortForward(kubeconfig, deployed.namespace, "svc/cleanroom-s3", 7070, port)
    yield endpoint
    if forward is not None:
        forward.close()


def _store_answers(endpoint: str) -> bool:
    """Whether an S3 server answers at the endpoint (any HTTP answer: an anonymous GET is refused with 403)."""
    try:
        requests.get(endpoint, timeout=5)
    except requests.RequestException:
        return False
    return True


@pytest.fixture(scope="module")
def approvers(kubectl: Kubectl) -> None:
    """Stewards and officers may read and change ExportRequests in the team's namespace (docs/install.md: a
    Role of the site's); admission, not RBAC, holds what they may write."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "export-approver", "namespace": SAMPLE_NS},
        "rules": [
            {
                "apiGroups": ["cleanroom.dev"],
                "resources": ["exportrequests"],
                "verbs": ["get", "list", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "export-approvers", "namespace": SAMPLE_NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "export-approver"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
            for group in (STEWARDS, OFFICERS)
        ],
    }
    kubectl.apply(role)
    kubectl.apply(binding)


def export_in_notebook(kubectl: Kubectl, pod: str, path: str) -> str:
    """`cleanroom export PATH -j ...` typed in alice's notebook; the ExportRequest's name from its answer."""
    result = kubectl.run(
        "exec",
        "-n",
        SAMPLE_NS,
        pod,
        "-c",
        "notebook",
        "--",
        "cleanroom",
        "export",
        path,
        "-j",
        JUSTIFICATION,
        check=False,
    )
    assert result.returncode == 0, f"cleanroom export {path}: {result.stdout}{result.stderr}"
    line = next(line for line in result.stdout.splitlines() if line.startswith("Export requested: "))
    return line.removeprefix("Export requested: ").split(" ", 1)[0]


def export_request(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return kubectl.get("exportrequest", name, "-n", SAMPLE_NS)


def phase_is(kubectl: Kubectl, name: str, *phases: str) -> dict[str, Any] | None:
    body = export_request(kubectl, name)
    return body if (body.get("status") or {}).get("phase") in phases else None


def decide(
    kubectl: Kubectl,
    name: str,
    user: str,
    groups: tuple[str, ...],
    role: str,
    by: str = "",
    claimed: tuple[str, ...] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``user`` (impersonated with ``groups``: admission's userInfo) adds an approval, as `cleanroom
    export-decide` sends it; ``by`` and ``claimed`` forge what the decision says of its author."""
    decisions = export_request(kubectl, name)["spec"].get("decisions") or []
    entry = {
        "by": by or user,
        "groups": list(groups if claimed is None else claimed),
        "role": role,
        "verdict": "Approve",
        "reason": "aggregate scores per fold, no image or identifier",
    }
    patch = [{"op": "add", "path": "/spec/decisions", "value": [*decisions, entry]}]
    return kubectl.run(
        "patch",
        "exportrequest",
        name,
        "-n",
        SAMPLE_NS,
        "--type=json",
        "-p",
        json.dumps(patch),
        "--as",
        user,
        *(f"--as-group={g}" for g in groups),
        check=False,
    )


def copy_pod_nodes(kubectl: Kubectl, name: str, job: str = "copy") -> set[str]:
    """Where the request's copy (or check) Job's pods were placed, from the scheduler's events (the Job and
    its pods are deleted once done; their events stay)."""
    events = kubectl.get("events", "-n", SAMPLE_NS, "--field-selector", "reason=Scheduled")["items"]
    prefix = f"xr-{name}-{job}-"
    return {
        e["message"].rsplit(" to ", 1)[1]
        for e in events
        if e["involvedObject"]["name"].startswith(prefix) and " to " in e["message"]
    }


def reader_client(kubectl: Kubectl, deployed: Deployed, endpoint: str) -> Minio:
    """The hub's download key, as an admin (or an attacker on the hub pod) holds it."""
    secret = kubectl.get("secret", "cleanroom-export-reader", "-n", deployed.namespace)["data"]
    access, key = (base64.b64decode(secret[k]).decode() for k in ("accessKey", "secretKey"))
    return Minio(endpoint.removeprefix("http://"), access, key, secure=False, region="us-east-1")


def reads(client: Minio, bucket: str, key: str) -> bytes | str:
    try:
        return bytes(client.get_object(bucket, key).read())
    except S3Error as error:
        return str(error.code)


def test_an_export_from_the_real_notebook_is_checked_approved_by_two_and_downloaded_by_alice(
    kubectl: Kubectl,
    deployed: Deployed,
    sample: dict[str, Any],
    proxy: PortForward,
    link_store: str,
    approvers: None,
    audit_page: requests.Session,
) -> None:
    run = f"airlock-{uuid.uuid4().hex[:6]}"
    assert kubectl.get("dataset", "sample-ct")["spec"]["export"]["stewardGroup"] == STEWARDS
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)
    assert pod["spec"]["nodeName"] == NODE
    written = exec_python(kubectl, SAMPLE_NS, pod["metadata"]["name"], WRITE_RESULTS.format(run=run))
    started = time.time()

    # alice asks from her notebook, for each file; the hub names her and her Workspace.
    csv_name = export_in_notebook(kubectl, pod["metadata"]["name"], f"results/{run}/metrics.csv")
    dicom_name = export_in_notebook(kubectl, pod["metadata"]["name"], f"results/{run}/slice.npy")
    for name in (csv_name, dicom_name):
        body = export_request(kubectl, name)
        assert body["metadata"]["annotations"]["cleanroom.dev/requested-by"] == ALICE
        assert body["spec"]["workspace"] == SAMPLE_WS

    # The copy: a Job on the real node, reading the notebook's home volume (bytes only this home holds).
    checked = {
        name: wait_for(
            lambda n=name: phase_is(kubectl, n, "AwaitingApproval", "Rejected", "Failed"),
            timeout=300,
            interval=2,
            what=f"{name} copied and checked",
        )
        for name in (csv_name, dicom_name)
    }
    for name, file in ((csv_name, "metrics.csv"), (dicom_name, "slice.npy")):
        assert copy_pod_nodes(kubectl, name) == {NODE}, f"copy Job of {name} not on {NODE}"
        assert copy_pod_nodes(kubectl, name, "check") == {NODE}, f"check Job of {name} not on {NODE}"
        status = checked[name]["status"]
        assert "quarantine" in status, f"{name} reached quarantine: {json.dumps(status)[:3000]}"
        [entry] = status["quarantine"]["files"]
        assert entry["path"] == f"results/{run}/{file}" and entry["digest"] == written[file]

    # The DICOM renamed .npy fails the checks: the request is Rejected, and says why.
    rejected = checked[dicom_name]["status"]
    assert rejected["phase"] == "Rejected", rejected
    failed = {c["name"] for c in rejected["checks"] if not c["passed"]}
    assert "NoDicom" in failed, rejected["checks"]
    [why] = [c for c in rejected["conditions"] if c["type"] == "Rejected"]
    assert why["status"] == "True" and why["reason"] == "ChecksFailed" and "slice.npy" in why["message"]

    csv_status = checked[csv_name]["status"]
    assert csv_status["phase"] == "AwaitingApproval", csv_status
    assert all(c["passed"] for c in csv_status["checks"]), csv_status["checks"]

    # --- attacks, each refused -----------------------------------------------------------------------------
    # alice, even as a member of the steward group, cannot approve her own request.
    own = decide(kubectl, csv_name, ALICE, ("sample-ai", STEWARDS), "DataSteward")
    assert own.returncode != 0 and "the requester of an export cannot decide on it" in own.stderr, own.stderr
    # A steward cannot decide in the officer's name, nor claim the officers' group, nor act as officer.
    forged = decide(kubectl, csv_name, STEWARD, (STEWARDS,), "SecurityOfficer", by=OFFICER)
    assert forged.returncode != 0 and "a decision names its author" in forged.stderr, forged.stderr
    claimed = decide(kubectl, csv_name, STEWARD, (STEWARDS,), "SecurityOfficer", claimed=(STEWARDS, OFFICERS))
    assert claimed.returncode != 0 and "only groups its author belongs to" in claimed.stderr, claimed.stderr
    posing = decide(kubectl, csv_name, STEWARD, (STEWARDS,), "SecurityOfficer")
    assert posing.returncode != 0 and f"needs membership of {OFFICERS}" in posing.stderr, posing.stderr

    alice = HubSession.sign_in(proxy.url, ALICE, ("sample-ai",))
    link = f"{proxy.url}/hub/exports/{SAMPLE_NS}/{csv_name}/download?file=results/{run}/metrics.csv"
    # One approval (the steward's) releases nothing: still awaiting, no link, no download, no outbox object.
    assert decide(kubectl, csv_name, STEWARD, (STEWARDS,), "DataSteward").returncode == 0
    wait_for(
        lambda: [
            d
            for d in (export_request(kubectl, csv_name).get("status") or {}).get("decisions") or []
            if d["by"] == STEWARD and d["counted"]
        ],
        timeout=60,
        what="the steward's approval judged",
    )
    time.sleep(5)
    one = export_request(kubectl, csv_name)["status"]
    assert one["phase"] == "AwaitingApproval" and "releasedAt" not in one, one
    page = alice.session.get(f"{proxy.url}/hub/exports", timeout=30)
    assert csv_name in page.text and "/download" not in page.text.split(csv_name, 1)[1].split("</tr>", 1)[0]
    early = alice.session.get(link, allow_redirects=False, timeout=30)
    assert early.status_code == 403, early.status_code

    # The hub's download key reads no quarantined file and no snapshot object (it is the outbox's only),
    # where the store's root key (the control) reads both; nothing is in the outbox yet.
    root = Minio(
        link_store.removeprefix("http://"), deployed.s3_access_key, deployed.s3_secret_key, secure=False
    )
    reader = reader_client(kubectl, deployed, link_store)
    prefix = f"exports/{SAMPLE_NS}/{csv_name}/{export_request(kubectl, csv_name)['metadata']['uid']}/"
    quarantined = prefix + "quarantine/sha256/" + written["metrics.csv"].removeprefix("sha256:")
    snapshot = (
        "snapshots/sample-ct/" + sample["status"]["snapshot"]["digest"].removeprefix("sha256:") + ".json"
    )
    for bucket, key in (("cleanroom-snapshots", quarantined), ("cleanroom-snapshots", snapshot)):
        assert isinstance(reads(root, bucket, key), bytes), key
        assert reads(reader, bucket, key) == "AccessDenied", key
    with pytest.raises(S3Error, match="AccessDenied"):
        list(reader.list_objects("cleanroom-exports", recursive=True))
    outbox = f"{prefix}outbox/results/{run}/metrics.csv"
    assert reads(root, "cleanroom-exports", outbox) == "NoSuchKey"

    # --- the officer's approval releases it ---------------------------------------------------------------
    assert decide(kubectl, csv_name, OFFICER, (OFFICERS,), "SecurityOfficer").returncode == 0
    released = wait_for(lambda: phase_is(kubectl, csv_name, "Released"), timeout=120, what="released")
    assert {(d["by"], d["role"], d["counted"]) for d in released["status"]["decisions"]} == {
        (STEWARD, "DataSteward", True),
        (OFFICER, "SecurityOfficer", True),
    }
    assert reads(reader, "cleanroom-exports", outbox) == reads(root, "cleanroom-exports", outbox)
    # bob, signed in to the same hub, is not the requester.
    bob = HubSession.sign_in(proxy.url, BOB, ("sample-ai",))
    assert bob.session.get(link, allow_redirects=False, timeout=30).status_code == 403
    # alice's page links the file; the link redirects to a short-lived URL of the store, which serves the bytes.
    assert link.removeprefix(proxy.url) in alice.session.get(f"{proxy.url}/hub/exports", timeout=30).text
    redirect = alice.session.get(link, allow_redirects=False, timeout=30)
    assert redirect.status_code == 302, redirect.text[-500:]
    location = redirect.headers["Location"]
    assert location.startswith(f"{link_store}/cleanroom-exports/exports/") and "X-Amz-Signature" in location
    downloaded = requests.get(location, timeout=30)
    assert downloaded.status_code == 200, downloaded.text[-500:]
    assert "sha256:" + hashlib.sha256(downloaded.content).hexdigest() == written["metrics.csv"]

    # --- the audit trail ----------------------------------------------------------------------------------
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 5))

    def steps(name: str) -> list[dict[str, str]]:
        return [
            r
            for r in audit_rows(audit_page, since=cutoff)
            if json.loads(r["resources"] or "{}").get("export") == name
        ]

    def kinds(rows: list[dict[str, str]]) -> set[tuple[str, str, str]]:
        return {(r["action"], r["outcome"], r["actor"]) for r in rows}

    operator = f"system:serviceaccount:{deployed.namespace}:cleanroom-operator"
    expected = {
        ("export.requested", "success", operator),
        ("export.copied", "success", operator),
        ("export.checked", "success", operator),
        ("export.decided", "success", operator),
        ("export.released", "success", operator),
        ("export.downloaded", "success", ALICE),
        ("export.downloaded", "denied", ALICE),
        ("export.downloaded", "denied", BOB),
    }
    found = wait_for(
        lambda: (rows := steps(csv_name)) and expected <= kinds(rows) and rows,
        timeout=120,
        interval=3,
        what=f"every step of {csv_name} in the audit trail",
    )
    decided = [r["reason"] for r in found if r["action"] == "export.decided"]
    assert any(STEWARD in r for r in decided) and any(OFFICER in r for r in decided), decided
    rejected_steps = wait_for(
        lambda: (
            (rows := steps(dicom_name))
            and {"export.checked", "export.rejected"} <= {r["action"] for r in rows}
            and rows
        ),
        timeout=120,
        interval=3,
        what=f"{dicom_name}'s rejection in the audit trail",
    )
    assert ("export.checked", "failure", operator) in kinds(rejected_steps)
    assert ("export.rejected", "denied", operator) in kinds(rejected_steps)


def test_alice_downloads_a_released_export_from_the_hubs_page_in_chromium(
    browser: Chrome,
    shots: Path,
    kubectl: Kubectl,
    sample: dict[str, Any],
    public_proxy: str,
    link_store: str,
    approvers: None,
) -> None:
    run = f"airlock-{uuid.uuid4().hex[:6]}"
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)["metadata"]["name"]
    written = exec_python(kubectl, SAMPLE_NS, pod, WRITE_RESULTS.format(run=run))
    name = export_in_notebook(kubectl, pod, f"results/{run}/metrics.csv")
    wait_for(lambda: phase_is(kubectl, name, "AwaitingApproval"), timeout=300, interval=2, what="checked")
    for user, group, role in ((STEWARD, STEWARDS, "DataSteward"), (OFFICER, OFFICERS, "SecurityOfficer")):
        assert decide(kubectl, name, user, (group,), role).returncode == 0
    wait_for(lambda: phase_is(kubectl, name, "Released"), timeout=120, what="released")

    downloads = shots / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    sign_in_in_browser(browser, shots, public_proxy)
    browser.get(f"{public_proxy}/hub/exports")
    row = WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"tr.export[data-name='{name}']"))
    )
    assert "Released" in row.text, row.text
    browser.save_screenshot(str(shots / "1-exports.png"))
    row.find_element(By.CSS_SELECTOR, "a.download").click()
    # The hub redirects to a short-lived URL of the store, which Chromium saves as the file.
    saved = wait_for(
        lambda: [p for p in downloads.iterdir() if not p.name.endswith(".crdownload")],
        timeout=60,
        what="the file saved by Chromium",
    )
    assert (
        len(saved) == 1
        and "sha256:" + hashlib.sha256(saved[0].read_bytes()).hexdigest() == written["metrics.csv"]
    )


def operator_restarts(kubectl: Kubectl, deployed: Deployed) -> dict[str, int]:
    pods = kubectl.get("pods", "-n", deployed.namespace, "-l", "app.kubernetes.io/name=cleanroom-operator")[
        "items"
    ]
    return {
        p["metadata"]["name"]: sum(
            c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or []
        )
        for p in pods
    }


def test_a_decompression_bomb_kills_only_its_check_job_and_is_rejected(
    kubectl: Kubectl, deployed: Deployed, sample: dict[str, Any]
) -> None:
    """Judged inside the operator (2 GiB, ci/deployed-values.yaml), this PNG would need more than its limit:
    the operator pod killed, and again at each restart while the request waits. Judged in the check Job,
    the kernel kills the checker, the request is rejected with the reason, and the operator carries on."""
    run = f"bomb-{uuid.uuid4().hex[:6]}"
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)["metadata"]["name"]
    assert exec_python(kubectl, SAMPLE_NS, pod, WRITE_BOMB.format(run=run)) < 1_000_000
    before = operator_restarts(kubectl, deployed)
    name = export_in_notebook(kubectl, pod, f"results/{run}/figure.png")
    body = wait_for(
        lambda: phase_is(kubectl, name, "AwaitingApproval", "Rejected", "Failed"),
        timeout=900,
        interval=3,
        what=f"{name} checked",
    )
    status = body["status"]
    assert status["phase"] == "Rejected", json.dumps(status)[:3000]
    [rejected] = [c for c in status["conditions"] if c["type"] == "Rejected"]
    assert rejected["reason"] == "CheckerFailed" and "OOMKilled" in rejected["message"], rejected
    assert "checks" not in status
    assert copy_pod_nodes(kubectl, name, "check") == {NODE}
    assert operator_restarts(kubectl, deployed) == before
