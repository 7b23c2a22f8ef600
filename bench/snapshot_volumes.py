"""Time and bytes to start N Workspaces over one snapshot (issue 18 item 4), on the real node, the ways of
serving /data in one run: `copy` (the chart's default and the baseline: a materializer Job and a copy per
Workspace) and `shared` (one verified copy per snapshot, a read-only volume per Workspace over it), and on
block storage (the stack's CSI driver with snapshots, StorageClass real-node-block): `block-copy` (the mode
shared without a VolumeSnapshotClass: a verified copy per Workspace, the baseline there) and `clone` (one
verified copy, snapshotted once, each Workspace's volume restored from the snapshot).

For each mode: hack/deploy.sh with workspaces.snapshotVolumes.mode set, a Dataset over --files CT slices of
512x512 (about 0.5 MB each), and for each N of --n: N Workspaces of alice over its snapshot, spread over
namespaces of at most 5 (the deployed values' quota admits 16 CPUs and 20 claims a namespace), applied at
once with running true, timed from the first apply until every one reports DatasetMounted True. Their
notebooks ask for more CPU than the node has, so they stay Pending: what is timed is the snapshot's delivery,
the part the two modes differ in (a notebook's own start is the same in both: bench/first_notebook.py). Bytes:
the distinct directories on the node that hold /data for them (du of each PersistentVolume's path) and the
materializer pods that ran. Between runs everything is deleted and the shared copy collected, so each N starts
from nothing.

    .venv/bin/python bench/snapshot_volumes.py --files 100 --n 1 --n 10 --n 50
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from minio import Minio
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import first_notebook  # noqa: E402
from ingest_shards import RAW, deployed, kubectl, store_endpoint, upload  # noqa: E402
from tests.deployed.conftest import deploy  # noqa: E402

from cleanroom.api.contract import object_name, snapshot_object_name  # noqa: E402

ALICE = first_notebook.ALICE
LABEL = "cleanroom.dev/bench-volumes"  # on the namespaces a mode's Dataset admits
RUN_LABEL = "cleanroom.dev/bench-volumes-n"  # on the Workspaces of one N
PER_NAMESPACE = 5
# More CPU than the real node has (2): the notebook pods stay Pending (Unschedulable), and 5 of them fit the
# deployed values' namespace quota (requests.cpu 16; 20 claims: a Workspace has two).
NOTEBOOK_CPU = "3"


@dataclass(frozen=True)
class Result:
    mode: str
    n: int
    first: float
    last: float
    materializer_pods: int
    volumes: int
    bytes_on_disk: int


@functools.cache
def series_of(study: str) -> str:
    return generate_uid()


def ct_slice(index: int, study: str) -> bytes:
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PatientName, ds.PatientID = "Bench^Volumes", "BENCH-VOL"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_of(study)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = index + 1
    ds.PixelData = os.urandom(512 * 512 * 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


BLOCK_CLASS, BLOCK_DRIVER = "real-node-block", "hostpath.csi.cleanroom.dev"
# Bound at once (hack/csi-snapshots-up.sh): these notebooks never schedule, and a WaitForFirstConsumer class
# would restore a clone only for a scheduled pod; a clone is timed until its claim is bound, i.e. restored.
BLOCK: dict[str, Any] = {
    "snapshotStorageClass": f"{BLOCK_CLASS}-immediate",
    "snapshotVolumes": {"mode": "shared", "blockProvisioners": [BLOCK_DRIVER]},
}
MODES: dict[str, dict[str, Any]] = {
    "copy": {"snapshotVolumes": {"mode": "copy"}},
    "shared": {"snapshotVolumes": {"mode": "shared"}},
    "block-copy": BLOCK,
    "clone": BLOCK | {"snapshotVolumes": BLOCK["snapshotVolumes"] | {"volumeSnapshotClass": BLOCK_CLASS}},
}


def deploy_mode(mode: str) -> None:
    """The chart with the workspaces values of ``mode`` (MODES; an upgrade of the deployed install)."""
    result = deploy({"workspaces": MODES[mode]})
    if result.returncode != 0:
        raise SystemExit(f"hack/deploy.sh failed:\n{result.stderr[-4000:]}")


def dataset(name: str, namespace: str, prefix: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "description": "bench/snapshot_volumes.py",
            "source": {"s3": {"endpoint": f"http://cleanroom-s3.{namespace}.svc:7070", "bucket": RAW,
                              "prefix": prefix,
                              "credentialsSecretRef": {"namespace": "cleanroom-keys", "name": "raw-imaging-reader"}}},
            "deidentification": {"method": "Anonymize"},
            "access": {"users": [ALICE], "namespaces": {"selector": {"matchLabels": {LABEL: run}}}},
        },
    }  # fmt: skip


def workspace(namespace: str, name: str, dataset_name: str, image: str) -> dict[str, Any]:
    """first_notebook.py's Workspace of alice, created by her, started, with a notebook the node cannot fit."""
    body = first_notebook.workspace(name, namespace, dataset_name, image, ALICE)
    body["spec"]["purpose"] = "bench/snapshot_volumes.py"
    body["spec"]["resources"] |= {"cpu": NOTEBOOK_CPU, "memory": "512Mi", "homeStorage": "100Mi"}
    body["spec"]["running"] = True
    return body


def team_namespaces(run: str, tag: str, n: int) -> list[str]:
    """ceil(n / PER_NAMESPACE) namespaces admitted by the run's Dataset, where alice may manage Workspaces."""
    names = [f"bench-vol-{tag}-{i}" for i in range(math.ceil(n / PER_NAMESPACE))]
    for ns in names:
        kubectl("create", "namespace", ns)
        kubectl("label", "namespace", ns, f"{LABEL}={run}")
        kubectl("-n", ns, "create", "role", "modeller", "--verb=get,list,watch,create,update,patch,delete",
                "--resource=workspaces.cleanroom.dev")  # fmt: skip
        kubectl("-n", ns, "create", "rolebinding", "modeller", "--role=modeller", f"--user={ALICE}")
    return names


def mounted(item: dict[str, Any]) -> bool:
    conditions = (item.get("status") or {}).get("conditions") or []
    return any(c["type"] == "DatasetMounted" and c["status"] == "True" for c in conditions)


def failed(item: dict[str, Any]) -> str:
    status = item.get("status") or {}
    if status.get("phase") != "Failed":
        return ""
    return f"{item['metadata']['namespace']}/{item['metadata']['name']}: {status.get('conditions')}"


def time_mounts(
    run: str, placed: list[tuple[str, str]], timeout: float, bound: bool = False
) -> tuple[float, float]:
    """Seconds from now until the first and until the last of the run's Workspaces is DatasetMounted (and,
    ``bound``, has its data claim bound: a clone is restored then)."""
    started, first = time.monotonic(), 0.0
    while time.monotonic() - started < timeout:
        items = json.loads(kubectl("get", "workspaces", "-A", "-l", f"{RUN_LABEL}={run}", "-o", "json"))[
            "items"
        ]
        problems = [f for f in map(failed, items) if f]
        if problems:
            raise SystemExit("a Workspace failed:\n" + "\n".join(problems))
        ready = [i for i in items if mounted(i)]
        if bound and ready:
            claims = json.loads(kubectl("get", "pvc", "-A", "-o", "json"))["items"]
            phases = {
                (c["metadata"]["namespace"], c["metadata"]["name"]): c["status"].get("phase") for c in claims
            }
            ready = [
                i
                for i in ready
                if phases.get((i["metadata"]["namespace"], object_name(i["metadata"]["name"], "data")))
                == "Bound"
            ]
        done = len(ready)
        if done and not first:
            first = time.monotonic() - started
        if done == len(placed):
            return first, time.monotonic() - started
        time.sleep(1)
    raise SystemExit(f"not every Workspace had its snapshot mounted within {timeout:.0f} s")


def volume_path(pv: dict[str, Any]) -> str:
    """Where a volume's data is on the node: the local path, or the stack's CSI driver's directory."""
    spec = pv["spec"]
    if (spec.get("csi") or {}).get("driver") == BLOCK_DRIVER:
        return str(ROOT / ".cluster/node/csi-hostpath/volumes" / spec["csi"]["volumeHandle"])
    return str((spec.get("hostPath") or spec.get("local") or {}).get("path") or "")


def bytes_and_copies(placed: list[tuple[str, str]], dataset_name: str, digest: str) -> tuple[int, int, int]:
    """The materializer pods that ran for these Workspaces (theirs, or the shared copy's), the distinct
    volumes holding /data for them, and their bytes on the node's disk."""
    paths = set()
    claims = [(ns, object_name(name, "data")) for ns, name in placed]
    # The one verified copy's own volume too: in the shared mode the same path, in the clone one more.
    copy = ("cleanroom-snapshots", snapshot_object_name(dataset_name, digest))
    for ns, claim_name in [*claims, copy]:
        try:
            claim = json.loads(kubectl("get", "pvc", "-n", ns, claim_name, "-o", "json"))
        except subprocess.CalledProcessError:
            continue  # no copy of its own in the copy mode
        pv = json.loads(kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json"))
        paths.add(volume_path(pv))
    # And the storage's snapshot of the verified copy (the clone's one VolumeSnapshot), none other.
    try:
        source = json.loads(kubectl("get", "volumesnapshot", "-n", copy[0], copy[1], "-o", "json"))
        bound = source["status"]["boundVolumeSnapshotContentName"]
        content = json.loads(kubectl("get", "volumesnapshotcontent", bound, "-o", "json"))
        paths.add(str(ROOT / ".cluster/node/csi-hostpath/snapshots" / content["status"]["snapshotHandle"]))
    except subprocess.CalledProcessError:
        pass  # not cloned: no VolumeSnapshot of the copy
    pods = 0
    for ns in {ns for ns, _ in placed} | {"cleanroom-snapshots"}:
        jobs = kubectl("get", "pods", "-n", ns, "-o", "jsonpath={.items[*].metadata.labels.job-name}").split()
        shared_job = snapshot_object_name(dataset_name, digest, "materialize")
        pods += sum(
            1 for j in jobs if j == shared_job or (ns != "cleanroom-snapshots" and j.endswith("-materialize"))
        )
    total = 0
    for path in paths:
        du = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout
        total += int(du.split()[0])
    return pods, len(paths), total


def clean_up(run: str, namespaces: list[str], dataset_name: str, digest: str) -> None:
    """Delete the run's Workspaces and namespaces and wait until no volume of theirs, nor the shared copy's
    claim, is left."""
    for ns in namespaces:
        kubectl("delete", "workspaces", "--all", "-n", ns, "--wait=true", "--timeout=300s")
        kubectl("delete", "namespace", ns, "--wait=false")
    copy = snapshot_object_name(dataset_name, digest)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        pvs = json.loads(kubectl("get", "pv", "-o", "json"))["items"]
        left = [p for p in pvs if (p["spec"].get("claimRef") or {}).get("namespace") in namespaces
                or (p["spec"].get("claimRef") or {}).get("name") == copy]  # fmt: skip
        if not left:
            return
        time.sleep(2)
    raise SystemExit(f"volumes of run {run} still there after 600 s")


def store_client(env: dict[str, str]) -> Minio:
    """The chart's S3 server at its pod's address now (a deploy may have restarted it)."""
    endpoint = store_endpoint(env["DEPLOYED_NAMESPACE"]).removeprefix("http://")
    return Minio(endpoint, env["DEPLOYED_S3_ACCESS_KEY"], env["DEPLOYED_S3_SECRET_KEY"], secure=False)


def one_mode(mode: str, files: int, ns_counts: list[int], env: dict[str, str]) -> list[Result]:
    deploy_mode(mode)
    client = store_client(env)
    run = uuid.uuid4().hex[:5]
    name, prefix = f"bench-vol-{mode}-{run}", f"bench-vol-{run}/"
    upload(client, prefix, files, ct_slice)
    kubectl("apply", "-f", "-", stdin=json.dumps(dataset(name, env["DEPLOYED_NAMESPACE"], prefix, run)))
    kubectl("wait", "--for=condition=Ready", f"dataset/{name}", "--timeout=600s")
    digest = json.loads(kubectl("get", "dataset", name, "-o", "json"))["status"]["snapshot"]["digest"]
    results = []
    try:
        for n in ns_counts:
            tag = f"{run}-{n}"
            namespaces = team_namespaces(run, tag, n)
            placed = [(namespaces[i // PER_NAMESPACE], f"bench-{i:02d}") for i in range(n)]
            items = [workspace(ns, w, name, env["DEPLOYED_IMAGE_NOTEBOOK"]) for ns, w in placed]
            for item in items:
                item["metadata"]["labels"] = {RUN_LABEL: tag}
            started = time.monotonic()
            kubectl("--as", ALICE, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                         "items": items}))  # fmt: skip
            applied = time.monotonic() - started
            first, last = time_mounts(tag, placed, timeout=1800, bound=mode in ("block-copy", "clone"))
            pods, volumes, size = bytes_and_copies(placed, name, digest)
            results.append(Result(mode, n, first + applied, last + applied, pods, volumes, size))
            print(f"  {mode} N={n}: first {first + applied:.1f} s, all {last + applied:.1f} s, "
                  f"{pods} materializer pods, {volumes} volumes, {size / 1e6:.1f} MB", file=sys.stderr)  # fmt: skip
            clean_up(tag, namespaces, name, digest)
    finally:
        kubectl("delete", "dataset", name, "--wait=false")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--files", type=int, default=100, help="CT slices in the snapshot (about 0.5 MB each)"
    )
    parser.add_argument("--n", type=int, action="append", help="Workspaces over the snapshot (repeatable)")
    parser.add_argument("--modes", default="copy,shared", help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args()
    counts = args.n or [1, 10, 50]
    env = deployed()
    load = os.getloadavg()[0]
    results: list[Result] = []
    try:
        for mode in args.modes.split(","):
            print(f"{mode}:", file=sys.stderr)
            results += one_mode(mode, args.files, counts, env)
    finally:  # the install as the suite expects it (ci/deployed-values.yaml), whatever happened above, and
        # the sample Workspace, stopped by the mode's change, started again
        deploy()
        subprocess.run([str(ROOT / "hack/deployed-sample.sh")], check=True, stdout=subprocess.DEVNULL)
    print(f"{args.files} CT slices in the snapshot; load average {load:.2f} at the start\n")
    print(
        "| mode | N | first mounted | all mounted | per Workspace | materializer pods | volumes | bytes on disk |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.mode} | {r.n} | {r.first:.1f} s | {r.last:.1f} s | {r.last / r.n:.2f} s | "
              f"{r.materializer_pods} | {r.volumes} | {r.bytes_on_disk / 1e6:.1f} MB |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
