"""The modeller's side of the airlock on the real stack: `cleanroom export` in alice's running session (a
local single-user server started by the hub, as in test_hub.py) reaches the hub without the hub token, the
hub creates the ExportRequest for alice and her Workspace from its own records, and once two people approve,
alice (and nobody else) downloads the file from the hub by a short-lived link the real S3 server honours.

The copy Job's pod lands on a simulated node here: the test does what its container does (test_exports.py)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cleanroom.airlock.copy import copy_to_quarantine
from cleanroom.audit import read_records
from cleanroom.hub.names import server_name
from tests.integration.conftest import AUDIT_DIR, ROOT, Kubectl, s3_env
from tests.integration.hub_process import Hub, run_hub
from tests.integration.test_export_admission import deployed_accounts
from tests.integration.test_exports import run_the_check_job
from tests.integration.test_hub import open_lab, stop_session, wait_for
from tests.integration.test_workspaces import dataset, workspace

__all__ = ["dataset"]  # fixture

ALICE, BOB = "alice@hospital.example", "bob@hospital.example"
STEWARDS, OFFICERS = "prostate-stewards", "cleanroom:security-officers"
METRICS = b"fold,dice\n1,0.871\n2,0.858\n"


@pytest.fixture(scope="module")
def hub(kubeconfig: str, operator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The hub, signing download links with the local S3 server's key (CLEANROOM_HUB_EXPORT_*)."""
    s3 = s3_env()
    links = {
        "CLEANROOM_HUB_EXPORT_ENDPOINT": s3["S3_ENDPOINT"],
        "CLEANROOM_HUB_EXPORT_ACCESS_KEY": s3["S3_ACCESS_KEY"],
        "CLEANROOM_HUB_EXPORT_SECRET_KEY": s3["S3_SECRET_KEY"],
        "CLEANROOM_HUB_EXPORT_BUCKET": "cleanroom-exports",  # the operator's outbox bucket (conftest)
    }
    yield from run_hub(kubeconfig, tmp_path_factory, links)


@pytest.fixture(scope="module")
def exported_dataset(dataset: str, kubectl: Kubectl) -> str:
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds/cleanroom.dev_exportrequests.yaml"))
    kubectl.run("wait", "--for=condition=Established", "crd/exportrequests.cleanroom.dev", "--timeout=60s")
    kubectl.run("patch", "dataset", dataset, "--type=merge", "-p",
                json.dumps({"spec": {"export": {"stewardGroup": STEWARDS}}}))  # fmt: skip
    return dataset


def as_alice(kubectl: Kubectl, namespace: str, workspace_name: str) -> None:
    kubectl.run("create", "role", "export-writer", "-n", namespace, "--verb=create,get",
                "--resource=exportrequests.cleanroom.dev")  # fmt: skip
    kubectl.run("create", "rolebinding", "alice", "-n", namespace, "--role=export-writer", f"--user={ALICE}")
    body = {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "ExportRequest",
        "metadata": {"generateName": f"{workspace_name}-", "annotations": {"cleanroom.dev/requested-by": ALICE}},
        "spec": {"workspace": workspace_name, "files": ["results/metrics.csv"],
                 "justification": "Aggregate Dice per fold for table 2 of the paper"},
    }  # fmt: skip
    kubectl.run("create", "-n", namespace, "-f", "-", "--as", ALICE, stdin=json.dumps(body))


def decide(kubectl: Kubectl, namespace: str, name: str, by: str, role: str, group: str) -> None:
    """``by``'s approval, as ``by`` (impersonated with ``group``), as `cleanroom export-decide` sends it."""
    rbac = f"approver-{role.lower()}"
    kubectl.run(
        "create", "role", rbac, "-n", namespace, "--verb=get,patch", "--resource=exportrequests.cleanroom.dev"
    )
    kubectl.run("create", "rolebinding", rbac, "-n", namespace, f"--role={rbac}", f"--user={by}")
    decisions = kubectl.get("exportrequest", name, "-n", namespace)["spec"].get("decisions") or []
    entry = {
        "by": by,
        "groups": [group],
        "role": role,
        "verdict": "Approve",
        "reason": "aggregate scores only",
    }
    patch = [{"op": "add", "path": "/spec/decisions", "value": [*decisions, entry]}]
    kubectl.run("patch", "exportrequest", name, "-n", namespace, "--type=json", "-p", json.dumps(patch),
                "--as", by, f"--as-group={group}")  # fmt: skip


def export_row(page: str, name: str) -> str:
    """The exports page's row for the ExportRequest ``name`` (fails when the page has none)."""
    match = re.search(rf'<tr class="export" data-name="{re.escape(name)}">.*?</tr>', page, re.S)
    assert match, f"no row for {name} on the exports page"
    return match.group(0)


def test_cleanroom_export_in_the_session_and_the_download_from_the_hub(
    hub: Hub, kubectl: Kubectl, namespace: str, exported_dataset: str
) -> None:
    name = f"seg-{uuid.uuid4().hex[:5]}"
    kubectl.apply(workspace(name, exported_dataset, running=False), "-n", namespace)
    server = server_name(namespace, name)
    session = hub.session(ALICE)
    session.get(f"{hub.url}/hub/spawn/{ALICE}/{server}")
    open_lab(hub, session, server)
    [home] = (hub.workdir / "sessions" / namespace / name / "home").iterdir()  # alice's, the one session
    (home / "results").mkdir(parents=True, exist_ok=True)
    (home / "results/metrics.csv").write_bytes(METRICS)

    # The modeller's command, as typed in the session's terminal: it holds no hub token.
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "export", "results/metrics.csv", "--home", str(home),
         "-j", "Aggregate Dice per fold for table 2 of the paper"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    if done.returncode != 0:
        # A release installed cluster-wide (make dev's) admits only its own hub to name a user in
        # requested-by, and this test's hub is not it: the refusal reached the modeller word for word. The
        # request is then made as the hub would have made it, by alice herself.
        assert deployed_accounts(kubectl) is not None, done.stderr
        assert "set the annotation cleanroom.dev/requested-by to your user name" in done.stderr, done.stderr
        as_alice(kubectl, namespace, name)
    [export] = [
        x for x in kubectl.get("exportrequests", "-n", namespace)["items"] if x["spec"]["workspace"] == name
    ]
    assert done.returncode != 0 or export["metadata"]["name"] in done.stdout
    # Who and which Workspace come from the hub's record of the session.
    assert export["metadata"]["annotations"]["cleanroom.dev/requested-by"] == ALICE
    assert export["spec"]["files"] == ["results/metrics.csv"]
    xr = export["metadata"]["name"]
    # Nothing but a running server's own token may ask.
    forged = requests.post(f"{hub.url}/hub/api/cleanroom/exports", json={"files": ["a"], "justification": "x" * 30},
                           headers={"Authorization": "token not-a-server-token"})  # fmt: skip
    assert forged.status_code == 403

    secret = kubectl.wait_for(lambda s: "grantUrl" in (s.get("data") or {}), "secret", f"xr-{xr}-upload",
                              "-n", namespace, timeout=60)  # fmt: skip
    copy_to_quarantine(base64.b64decode(secret["data"]["grantUrl"]).decode(), home)
    run_the_check_job(kubectl, namespace, xr)
    kubectl.wait_for(lambda x: (x.get("status") or {}).get("phase") == "AwaitingApproval", "exportrequest", xr,
                     "-n", namespace, timeout=120)  # fmt: skip
    # This export's row: the same user may hold others (the deployed suite's, released, in another namespace).
    row = export_row(session.get(f"{hub.url}/hub/exports").text, xr)
    assert "AwaitingApproval" in row and "/download" not in row
    decide(kubectl, namespace, xr, BOB, "DataSteward", STEWARDS)
    decide(kubectl, namespace, xr, "olga@hospital.example", "SecurityOfficer", OFFICERS)
    kubectl.run("wait", "--for=condition=Released", f"exportrequest/{xr}", "-n", namespace, "--timeout=60s")

    link = f"{hub.url}/hub/exports/{namespace}/{xr}/download?file=results/metrics.csv"
    assert link.removeprefix(hub.url) in export_row(session.get(f"{hub.url}/hub/exports").text, xr)
    # Bob, signed in, is not the requester: refused and audited.
    assert hub.session(BOB).get(link, allow_redirects=False).status_code == 403
    redirect = session.get(link, allow_redirects=False)
    assert redirect.status_code == 302 and "X-Amz-Signature" in redirect.headers["Location"]
    assert requests.get(redirect.headers["Location"], timeout=30).content == METRICS
    stop_session(hub, session, server)

    def downloads(actor: str, outcome: str) -> list[dict[str, Any]]:
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))
        return [
            r["event"] for r in read_records(AUDIT_DIR)
            if r["event"]["action"] == "export.downloaded" and r["event"]["time"] >= cutoff
            and r["event"]["actor"]["name"] == actor and r["event"]["outcome"] == outcome
            and r["event"]["resources"].get("export") == xr
        ]  # fmt: skip

    wait_for(lambda: downloads(ALICE, "success"), timeout=30, what="export.downloaded by alice")
    wait_for(lambda: downloads(BOB, "denied"), timeout=30, what="export.downloaded refused to bob")
