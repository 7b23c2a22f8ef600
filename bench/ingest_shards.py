"""A Dataset's ingest as an Indexed Job of shard pods on the real node, beside the in-process ingest, in one run.

N small DICOM files (a CT header with 8x8 pixels, about 2 KB each) are uploaded to the deployed S3 server.
The in-process ingest (the operator's pipeline, ``ingest.run`` with 1 and 2 worker processes, S3 to S3) runs
here, on the same machine whose two cores are the real node's; then Datasets with ``spec.ingest.parallelism``
1 and 2 (one core per pod) are applied to the deployed operator (ingest.mode job) and timed from apply to
Ready. Anonymize everywhere: each run makes its own objects, so no run finds its objects already stored.
Prints files/s, files/s per core used, and for the Jobs the shard phase (the Job's start to completion)
apart from the operator's part (listing and planning before, checking, copying and publishing after).

    flock /tmp/stack.lock .venv/bin/python bench/ingest_shards.py --files 20000 --pods 1 --pods 2

Needs the deployed install (hack/deploy.sh) with ingest.mode job (charts/cleanroom/ci/deployed-values.yaml).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
from minio import Minio
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.conftest import KUBECTL, STATE  # noqa: E402

from cleanroom.api import DeidentificationMethod  # noqa: E402
from cleanroom.deid import DeidConfig, Keyring  # noqa: E402
from cleanroom.ingest import Limits, StoreSink, publish, run  # noqa: E402
from cleanroom.snapshots import S3Location, SnapshotStore  # noqa: E402
from cleanroom.sources import S3Reader  # noqa: E402

KUBECONFIG = str(STATE / "kubeconfig")
RAW = "raw-imaging"


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def deployed() -> dict[str, str]:
    lines = (STATE / "deployed.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def store_endpoint(namespace: str) -> str:
    """The S3 pod as this machine reaches it: its pod IP on the real node's bridge (no port-forward)."""
    ip = kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=cleanroom-s3", "-o",
                 "jsonpath={.items[0].status.podIP}")  # fmt: skip
    return f"http://{ip}:7070"


def small_dicom(index: int, study: str) -> bytes:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = f"Bench^P{index % 100}", f"BENCH-{index % 100}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, study + ".1"
    ds.Modality, ds.InstanceNumber, ds.StudyDate = "CT", index, "20240101"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(128)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def upload(client: Minio, prefix: str, files: int) -> None:
    if not client.bucket_exists(RAW):
        client.make_bucket(RAW)
    study = generate_uid()

    def put(index: int) -> None:
        data = small_dicom(index, study)
        client.put_object(RAW, f"{prefix}{index:06d}.dcm", io.BytesIO(data), len(data))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(files)))


def in_process(endpoint: str, keys: tuple[str, str], prefix: str, workers: int) -> float:
    """Seconds for the in-process ingest (the operator's pipeline) to a bucket of its own, published."""
    bucket = f"bench-inprocess-{uuid.uuid4().hex[:6]}"
    store = SnapshotStore(S3Location(endpoint, bucket, *keys))
    store.ensure_bucket()
    reader = S3Reader(endpoint, RAW, prefix, "", *keys)
    config = DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random())
    started = time.monotonic()
    items = reader.items()
    result = run(reader, items, config, StoreSink(store.location), workers=workers, limits=Limits())
    assert result.outage is None, result.outage
    publish(store, dataset="bench", result=result, reader=reader, config=config, origin={"bench": "1"})
    return time.monotonic() - started


def as_job(namespace: str, prefix: str, pods: int, per_shard: int, cpu: str) -> dict[str, float]:
    """Apply a Dataset with ``pods`` shard pods of ``cpu`` each; its times (apply to Ready, the Job's run)."""
    name = f"bench-shards-{pods}-{uuid.uuid4().hex[:6]}"
    dataset = {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "source": {"s3": {"endpoint": f"http://cleanroom-s3.{namespace}.svc:7070", "bucket": RAW,
                              "prefix": prefix,
                              "credentialsSecretRef": {"namespace": "cleanroom-keys", "name": "raw-imaging-reader"}}},
            "deidentification": {"method": "Anonymize"},
            "ingest": {"parallelism": pods, "filesPerShard": per_shard, "cpu": cpu, "memory": "512Mi"},
        },
    }  # fmt: skip
    started = time.monotonic()
    kubectl("apply", "-f", "-", stdin=json.dumps(dataset))
    job: dict[str, Any] = {}
    try:
        while True:
            found = json.loads(kubectl("get", "jobs", "-n", "cleanroom-ingest", "-l",
                                       f"cleanroom.dev/dataset={name}", "-o", "json"))["items"]  # fmt: skip
            job = found[0] if found else job
            status = json.loads(kubectl("get", "dataset", name, "-o", "json")).get("status", {})
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            if ready.get("status") == "True":
                break
            assert ready.get("reason") in (None, "Ingesting"), ready
            time.sleep(0.5)
        wall = time.monotonic() - started
    finally:
        kubectl("delete", "dataset", name, "--wait=false")
    times = job.get("status", {})
    shard_phase = float("nan")
    if times.get("startTime") and times.get("completionTime"):
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        shard_phase = (
            datetime.strptime(times["completionTime"], stamp) - datetime.strptime(times["startTime"], stamp)
        ).total_seconds()
    return {"wall": wall, "shards": shard_phase}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--pods", type=int, action="append", default=[])
    parser.add_argument("--per-shard", type=int, default=2500)
    # The real node has two cores, shared with the release's own pods: two pods of a whole core do not fit.
    parser.add_argument("--cpu", default="500m", help="each shard pod's CPU (request and limit)")
    args = parser.parse_args()
    pods = args.pods or [1, 2]
    env = deployed()
    namespace, keys = (
        env["DEPLOYED_NAMESPACE"],
        (env["DEPLOYED_S3_ACCESS_KEY"], env["DEPLOYED_S3_SECRET_KEY"]),
    )
    endpoint = store_endpoint(namespace)
    client = Minio(endpoint.removeprefix("http://"), *keys, secure=False)
    prefix = f"bench-{uuid.uuid4().hex[:6]}/"
    began = time.monotonic()
    upload(client, prefix, args.files)
    print(
        f"{args.files} files uploaded to s3://{RAW}/{prefix} in {time.monotonic() - began:.1f} s", flush=True
    )
    rows = []
    for count in pods:
        seconds = in_process(endpoint, keys, prefix, count)
        rows.append(("in-process", count, seconds, float("nan")))
        print(f"in-process, {count} workers: {seconds:.1f} s", flush=True)
    for count in pods:
        times = as_job(namespace, prefix, count, args.per_shard, args.cpu)
        rows.append(("indexed Job", count, times["wall"], times["shards"]))
        print(
            f"indexed Job, {count} pods: {times['wall']:.1f} s (shards {times['shards']:.0f} s)", flush=True
        )
    baseline = {count: seconds for mode, count, seconds, _ in rows if mode == "in-process"}
    share = int(args.cpu[:-1]) / 1000 if args.cpu.endswith("m") else float(args.cpu)
    print(f"\n| ingest of {args.files} small files | workers or pods | cores | wall s | files/s | files/s per core "
          "| vs in-process |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, count, seconds, shards in rows:
        rate = args.files / seconds
        cores = count * (share if mode == "indexed Job" else 1)
        extra = f" (shard phase {shards:.0f} s)" if shards == shards else ""
        print(f"| {mode}{extra} | {count} | {cores:g} | {seconds:.1f} | {rate:.0f} | {rate / cores:.0f} | "
              f"{baseline[count] / seconds:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
