"""A Dataset's ingest as an Indexed Job on the real node (issue 18 item 1): the shards really run as pods on
real-0, a shard pod killed mid-run is retried alone (its index gets a second pod, no other index does), and
the snapshot is still exactly one, with the same files, byte for byte, as the in-process ingest of the same
source with the same key (computed here with the pipeline the operator runs in-process)."""

from __future__ import annotations

import io
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
import yaml
from minio import Minio
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cleanroom.api import BurnedInAnnotationPolicy, DeidentificationMethod, DeidentificationOption
from cleanroom.deid import CleanFile, DeidConfig, Keyring, key_from_bytes
from cleanroom.ingest import Limits, run
from cleanroom.ingest.pipeline import file_entry
from cleanroom.snapshots import FileEntry, S3Location, SnapshotStore, content_digest
from cleanroom.sources import S3Reader
from tests.deployed.conftest import STATE, Deployed, PortForward, wait_for
from tests.integration.conftest import Kubectl

NODE = "real-0"
INGEST_NS = "cleanroom-ingest"
# Shards of 80 files: a shard pod works for seconds after its imports, so the kill below lands before it is
# done (with 24 files a shard could finish before the kill landed, even seen Pending: the kubelet's status
# lags, and a pod killed after it succeeded is not retried, which proves nothing).
FILES, PER_SHARD = 400, 80
OPTIONS = ("CleanDescriptors", "RetainPatientCharacteristics")


class DigestSink:
    """The in-process pipeline's outputs, kept as the store would name them (no store needed)."""

    def put(self, clean: CleanFile) -> FileEntry:
        return file_entry(clean, content_digest(clean.data))


def _corpus(client: Minio, prefix: str) -> None:
    """FILES CT slices of four patients, each its own instance."""
    if not client.bucket_exists("raw-imaging"):
        client.make_bucket("raw-imaging")
    study = {p: generate_uid() for p in range(4)}
    for i in range(FILES):
        ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
        ds.PatientID, ds.PatientName = f"SHARD-{i % 4}", f"Doe^Shard{i % 4}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study[i % 4], study[i % 4] + ".1"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i
        buffer = io.BytesIO()
        ds.save_as(buffer)
        data = buffer.getvalue()
        client.put_object("raw-imaging", f"{prefix}{i:03d}.dcm", io.BytesIO(data), len(data))


def _dataset(name: str, namespace: str, prefix: str) -> dict[str, Any]:
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "s3": {
                    "endpoint": f"http://cleanroom-s3.{namespace}.svc:7070",
                    "bucket": "raw-imaging",
                    "prefix": prefix,
                    "credentialsSecretRef": {"namespace": "cleanroom-keys", "name": "raw-imaging-reader"},
                }
            },
            "deidentification": {
                "method": "Pseudonymize",
                "keySecretRef": {"namespace": "cleanroom-keys", "name": "site-pseudonym-key"},
                "options": list(OPTIONS),
            },
            "ingest": {"parallelism": 2, "filesPerShard": PER_SHARD, "cpu": "100m", "memory": "512Mi"},
            "access": {"users": ["nobody@hospital.example"]},
        },
    }


def _in_process(store: PortForward, deployed: Deployed, prefix: str) -> list[dict[str, Any]]:
    """The manifest's files as the in-process ingest makes them from the same source and key (the site key
    hack/deploy.sh put in cleanroom-keys/site-pseudonym-key)."""
    config = DeidConfig(
        DeidentificationMethod.PSEUDONYMIZE,
        Keyring(key_from_bytes((STATE / "site-pseudonym.key").read_bytes())),
        frozenset(DeidentificationOption(o) for o in OPTIONS),
        BurnedInAnnotationPolicy.QUARANTINE,
    )
    reader = S3Reader(store.url, "raw-imaging", prefix, "", deployed.s3_access_key, deployed.s3_secret_key)
    result = run(reader, reader.items(), config, DigestSink(), workers=1, limits=Limits())
    assert result.outage is None
    return [entry.to_json() for entry in sorted(result.files, key=lambda e: e.path)]


def _ingest_mode(kubectl: Kubectl, namespace: str) -> str:
    """The deployed operator's ingest.mode, from its settings (the chart's ConfigMap)."""
    data = kubectl.get("configmap", "cleanroom-workspaces", "-n", namespace)["data"]["workspaces.yaml"]
    return str(yaml.safe_load(data).get("ingestMode", "in-process"))


@pytest.fixture
def shard_dataset(kubectl: Kubectl, deployed: Deployed, store: PortForward) -> Iterator[tuple[str, str]]:
    if _ingest_mode(kubectl, deployed.namespace) != "job":
        pytest.skip(
            "the deployed install ingests in the operator: set ingest.mode job in ci/deployed-values.yaml"
        )
    name, prefix = f"shards-{uuid.uuid4().hex[:6]}", f"shards-{uuid.uuid4().hex[:6]}/"
    client = Minio(f"127.0.0.1:{store.port}", deployed.s3_access_key, deployed.s3_secret_key, secure=False)
    _corpus(client, prefix)
    yield name, prefix
    kubectl.run("delete", "dataset", name, "--ignore-not-found", "--wait=false", check=False)


def _pods(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    found = kubectl.get("pods", "-n", INGEST_NS, "-l", f"cleanroom.dev/dataset={name}")
    return list(found["items"])


def test_shards_run_as_pods_a_killed_shard_is_retried_alone_and_one_snapshot_is_published(
    kubectl: Kubectl, deployed: Deployed, store: PortForward, shard_dataset: tuple[str, str]
) -> None:
    name, prefix = shard_dataset
    expected = _in_process(store, deployed, prefix)
    kubectl.apply(_dataset(name, deployed.namespace, prefix))

    seen: dict[int, set[str]] = defaultdict(set)
    nodes: set[str] = set()

    def watch() -> list[dict[str, Any]]:
        pods = _pods(kubectl, name)
        for pod in pods:
            index = int(pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"])
            seen[index].add(pod["metadata"]["uid"])
            if pod["spec"].get("nodeName"):
                nodes.add(pod["spec"]["nodeName"])
        return pods

    # Killed as soon as it is seen, started or not (FILES, PER_SHARD: long enough a shard for the kill to land).
    alive = wait_for(
        lambda: [p for p in watch() if p["status"].get("phase") in ("Pending", "Running")],
        timeout=300,
        what="a shard pod",
        interval=0.2,
    )
    victim = alive[0]
    killed = int(victim["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"])
    kubectl.run("delete", "pod", "-n", INGEST_NS, victim["metadata"]["name"], "--grace-period=0", "--force")

    def ready() -> dict[str, Any] | None:
        watch()
        dataset = kubectl.get("dataset", name)
        conditions = {c["type"]: c for c in dataset.get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        assert ready.get("reason") not in ("IngestShardFailed", "IngestShardRejected"), ready
        return dataset if ready.get("status") == "True" else None

    dataset = wait_for(ready, timeout=900, what=f"Dataset {name} Ready", interval=0.5)
    kubectl.run("wait", "--for=condition=Ready", f"dataset/{name}", "--timeout=10s")

    shards = (FILES + PER_SHARD - 1) // PER_SHARD
    assert dataset["status"]["progress"]["shardsTotal"] == shards
    assert dataset["status"]["progress"]["shardsDone"] == shards
    assert nodes == {NODE}, f"shard pods ran on {nodes}"
    assert sorted(seen) == list(range(shards))
    assert len(seen[killed]) >= 2, f"the killed shard {killed} was not retried: {dict(seen)}"
    assert all(len(pods) == 1 for index, pods in seen.items() if index != killed), dict(seen)

    snapshots = SnapshotStore(
        S3Location(store.url, "cleanroom-snapshots", deployed.s3_access_key, deployed.s3_secret_key)
    )
    published = snapshots.snapshots(name)
    assert len(published) == 1, [digest for digest, _ in published]
    digest, manifest = published[0]
    assert dataset["status"]["snapshot"]["digest"] == digest
    assert manifest["files"] == expected, "the shards' snapshot differs from the in-process ingest's"
    assert snapshots.verify(name, digest) == []
    # The run is cleaned away: no Job, Secret or policy left in the ingest namespace, nothing under ingest/.
    left = kubectl.get("jobs,secrets,networkpolicies", "-n", INGEST_NS, "-l", f"cleanroom.dev/dataset={name}")
    assert left["items"] == []
    assert not list(
        snapshots.client.list_objects("cleanroom-snapshots", prefix=f"ingest/{name}/", recursive=True)
    )
    # What the shard pods held: the run's grant URL and key from ds-*-ingest, no store key, no token.
    assert victim["spec"]["automountServiceAccountToken"] is False
    env = victim["spec"]["containers"][0]["env"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {f"ds-{name}-ingest"}
    print(json.dumps({"shards": shards, "killed": killed, "pods": {i: len(p) for i, p in seen.items()}}))


def test_a_dataset_deleted_while_its_shards_run_leaves_nothing_behind(
    kubectl: Kubectl, deployed: Deployed, store: PortForward, shard_dataset: tuple[str, str]
) -> None:
    """The run's plan (with its presigned grants), shard results and staged uploads leave the store, and its
    Job, pods, Secret and policy the ingest namespace, once the Dataset is deleted mid-run."""
    name, prefix = shard_dataset
    snapshots = SnapshotStore(
        S3Location(store.url, "cleanroom-snapshots", deployed.s3_access_key, deployed.s3_secret_key)
    )

    def stored() -> list[str]:
        found = snapshots.client.list_objects("cleanroom-snapshots", prefix=f"ingest/{name}/", recursive=True)
        return [str(item.object_name) for item in found]

    kubectl.apply(_dataset(name, deployed.namespace, prefix))
    wait_for(
        lambda: _pods(kubectl, name) and stored(),
        timeout=300,
        what="the run's plan and a shard pod",
        interval=0.2,
    )
    kubectl.run("delete", "dataset", name, "--wait=true")

    def gone() -> bool:
        # The pods first: once none is left, nothing uploads, so a store found empty after stays empty.
        objects = kubectl.get(
            "pods,jobs,secrets,networkpolicies", "-n", INGEST_NS, "-l", f"cleanroom.dev/dataset={name}"
        )
        return not objects["items"] and not stored()

    wait_for(
        gone,
        timeout=300,
        what=f"Dataset {name}'s run gone from the store and the ingest namespace",
        interval=2,
    )
