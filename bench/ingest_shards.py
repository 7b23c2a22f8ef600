"""A Dataset's ingest as an Indexed Job of shard pods on the real node, beside the in-process ingest, one
configuration at a time (each its own hold of the stack).

N small DICOM files (a CT header with 8x8 pixels, about 800 B each) are uploaded once to the deployed S3 server
(``upload``). ``in-process W`` runs the operator's pipeline here (``ingest.run`` with W worker processes, S3 to
S3, published), on the machine whose two cores are the real node's; ``job P`` applies a Dataset with
``spec.ingest.parallelism`` P to the deployed operator (ingest.mode job) and times it from apply to Ready, and
the Job's shard phase (its start to completion) apart from the operator's part (listing and planning before,
checking, promoting and publishing after). Anonymize everywhere: each run makes its own objects, so no run
finds its objects already stored. Each run appends a line (with the load average before and after) to
``--results``; ``table`` prints them beside the in-process baseline.

    .venv/bin/python bench/ingest_shards.py upload --files 20000          # prints the prefix
    flock /tmp/stack.lock .venv/bin/python bench/ingest_shards.py in-process 1 --prefix P
    flock /tmp/stack.lock .venv/bin/python bench/ingest_shards.py job 4 --prefix P --cpu 250m
    .venv/bin/python bench/ingest_shards.py table

Needs the deployed install (hack/deploy.sh) with ingest.mode job (charts/cleanroom/ci/deployed-values.yaml).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
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


def upload(client: Minio, prefix: str, files: int, make: Callable[[int, str], bytes] = small_dicom) -> None:
    """``files`` DICOM files of one study under ``prefix`` of the raw bucket, ``make(index, study)`` each."""
    if not client.bucket_exists(RAW):
        client.make_bucket(RAW)
    study = generate_uid()

    def put(index: int) -> None:
        data = make(index, study)
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


def cores_of(cpu: str) -> float:
    return int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)


def record(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as results:
        results.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def files_under(client: Minio, prefix: str) -> int:
    return sum(1 for _ in client.list_objects(RAW, prefix=prefix, recursive=True))


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    baseline = {(r["files"], r["count"]): r["wall"] for r in rows if r["mode"] == "in-process"}
    print("| ingest | files | workers or pods | cores | wall s | files/s | files/s per core | shard phase s "
          "| operator's part s | vs in-process, same count | load before/after |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        rate = r["files"] / r["wall"]
        base = baseline.get((r["files"], r["count"]))
        ratio = f"{base / r['wall']:.2f}x" if base else ""
        shards = r.get("shards")
        phase = f"{shards:.0f}" if shards is not None else ""
        operator = f"{r['wall'] - shards:.0f}" if shards is not None else ""
        print(f"| {r['mode']} | {r['files']} | {r['count']} | {r['cores']:g} | {r['wall']:.1f} | {rate:.0f} | "
              f"{rate / r['cores']:.0f} | {phase} | {operator} | {ratio} | "
              f"{r['load'][0]:.2f}/{r['load'][1]:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["upload", "in-process", "job", "table"])
    parser.add_argument("count", type=int, nargs="?", default=1, help="workers (in-process) or pods (job)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--per-shard", type=int, default=1000)
    # The real node has two cores, about half of them requested by the release's own pods.
    parser.add_argument("--cpu", default="250m", help="each shard pod's CPU (request and limit)")
    parser.add_argument("--results", type=Path, default=Path("/tmp/bench-ingest-shards.jsonl"))
    args = parser.parse_args()
    if args.what == "table":
        table(args.results)
        return
    env = deployed()
    namespace, keys = (
        env["DEPLOYED_NAMESPACE"],
        (env["DEPLOYED_S3_ACCESS_KEY"], env["DEPLOYED_S3_SECRET_KEY"]),
    )
    endpoint = store_endpoint(namespace)
    client = Minio(endpoint.removeprefix("http://"), *keys, secure=False)
    if args.what == "upload":
        prefix = f"bench-{uuid.uuid4().hex[:6]}/"
        began = time.monotonic()
        upload(client, prefix, args.files)
        print(f"{args.files} files uploaded to s3://{RAW}/{prefix} in {time.monotonic() - began:.1f} s")
        print(prefix)
        return
    files = files_under(client, args.prefix)
    load = os.getloadavg()[0]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    if args.what == "in-process":
        wall = in_process(endpoint, keys, args.prefix, args.count)
        row = {"mode": "in-process", "count": args.count, "cores": args.count, "wall": wall, "shards": None}
    else:
        times = as_job(namespace, args.prefix, args.count, args.per_shard, args.cpu)
        row = {"mode": f"job, pods of {args.cpu}", "count": args.count, "cores": args.count * cores_of(args.cpu),
               "wall": times["wall"], "shards": times["shards"]}  # fmt: skip
    record(args.results, {**row, "files": files, "load": [load, os.getloadavg()[0]], "at": stamp})


if __name__ == "__main__":
    main()
