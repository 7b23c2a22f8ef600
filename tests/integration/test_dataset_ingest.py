"""Datasets against the real API server, the real S3 server and the operator process: ingest, quarantine,
publish an immutable verifiable snapshot, report failures people can act on, and survive a crash."""

from __future__ import annotations

import base64
import copy
import io
import os
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from minio import Minio
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cleanroom.snapshots import S3Location, SnapshotStore, object_key
from tests import phi_corpus
from tests.integration.conftest import Kubectl, OperatorProcess, s3_env


def s3_client() -> Minio:
    env = s3_env()
    return Minio(
        env["S3_ENDPOINT"].removeprefix("http://"), env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"], secure=False
    )


def snapshot_store() -> SnapshotStore:
    env = s3_env()
    return SnapshotStore(
        S3Location(env["S3_ENDPOINT"], "cleanroom-snapshots", env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"])
    )


def upload(directory: Path, bucket: str, prefix: str) -> None:
    client = s3_client()
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            client.fput_object(bucket, prefix + str(path.relative_to(directory)), str(path))


def make_reader_secret(kubectl: Kubectl, namespace: str) -> None:
    """The S3 read credentials a Dataset's source refers to (Secret raw-reader)."""
    env = s3_env()
    kubectl.run(
        "create",
        "secret",
        "generic",
        "raw-reader",
        "-n",
        namespace,
        f"--from-literal=accessKey={env['S3_ACCESS_KEY']}",
        f"--from-literal=secretKey={env['S3_SECRET_KEY']}",
    )


def make_secrets(kubectl: Kubectl, namespace: str, key: bytes) -> None:
    kubectl.run(
        "create",
        "secret",
        "generic",
        "site-key",
        "-n",
        namespace,
        f"--from-literal=key={base64.b64encode(key).decode()}",
    )
    make_reader_secret(kubectl, namespace)


def dataset_manifest(name: str, namespace: str, bucket: str, prefix: str, **deid: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "s3": {
                    "endpoint": s3_env()["S3_ENDPOINT"],
                    "bucket": bucket,
                    "prefix": prefix,
                    "credentialsSecretRef": {"namespace": namespace, "name": "raw-reader"},
                }
            },
            "deidentification": {
                "method": "Pseudonymize",
                "keySecretRef": {"namespace": namespace, "name": "site-key"},
                "options": ["RetainLongitudinalTemporalInformationModifiedDates", "CleanDescriptors"],
                **deid,
            },
            "access": {"users": ["alice@hospital.example"]},
        },
    }


def ready(body: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})


@pytest.fixture
def dataset_name(kubectl: Kubectl) -> Any:
    name = f"ds-{uuid.uuid4().hex[:8]}"
    yield name
    kubectl.run("delete", "dataset", name, "--wait=false", check=False)


def test_s3_dataset_is_deidentified_published_and_verifiable(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dataset_name: str, tmp_path: Path
) -> None:
    corpus = phi_corpus.build(tmp_path / "raw")
    bucket, prefix = "raw-imaging", f"{dataset_name}/"
    upload(tmp_path / "raw", bucket, prefix)
    key = os.urandom(32)
    make_secrets(kubectl, namespace, key)
    kubectl.apply(dataset_manifest(dataset_name, namespace, bucket, prefix))

    body = kubectl.wait_for(lambda d: ready(d).get("status") == "True", "dataset", dataset_name, timeout=180)
    status = body["status"]
    expected_quarantine = sum(1 for f in corpus if f.expect_quarantine)
    assert status["phase"] == "Ready"
    assert status["snapshot"]["files"] == len(corpus) - expected_quarantine
    assert status["quarantine"]["files"] == expected_quarantine
    assert status["snapshot"]["patients"] == 1 and status["snapshot"]["studies"] == 1
    assert status["snapshot"]["modalities"] == ["CT", "MR", "SEG", "SR"]
    assert status["progress"]["filesDone"] == status["progress"]["filesTotal"] == len(corpus)
    digest = status["snapshot"]["digest"]
    assert status["snapshot"]["shortDigest"] == digest.removeprefix("sha256:")[:12]
    assert ready(body)["observedGeneration"] == body["metadata"]["generation"]

    store = snapshot_store()
    assert store.verify(dataset_name, digest) == []
    manifest = store.manifest(dataset_name, digest)
    assert manifest["deidentification"]["keyId"].startswith("hmac-sha512-256:")
    assert manifest["deidentification"]["method"] == "Pseudonymize"
    assert manifest["source"]["location"] == f"s3://{bucket}/{prefix}"
    for entry in manifest["files"]:
        data = store.get_object(entry["digest"])
        assert data is not None
        for token in phi_corpus.TOKENS:
            assert token.encode() not in data, f"{token} leaked into {entry['path']}"
        assert key not in data and base64.b64encode(key) not in data

    report = (
        s3_client().get_object("cleanroom-snapshots", status["quarantine"]["report"].split("/", 3)[3]).read()
    )
    for f in corpus:
        if f.expect_quarantine:
            assert f.name.encode() in report and f.expect_quarantine.encode() in report

    events = kubectl.get("events", "-A", "--field-selector", f"involvedObject.name={dataset_name}")["items"]
    reasons = {e["reason"] for e in events}
    assert {"IngestStarted", "SnapshotPublished", "FileQuarantined"} <= reasons

    # The snapshot is verifiable: a changed object is caught and named.
    victim = manifest["files"][0]
    tampered = bytearray(store.get_object(victim["digest"]) or b"")
    tampered[-1] ^= 0xFF
    s3_client().put_object(
        "cleanroom-snapshots", object_key(victim["digest"]), io.BytesIO(bytes(tampered)), len(tampered)
    )
    problems = store.verify(dataset_name, digest)
    assert [p.path for p in problems] == [victim["path"]]
    assert "digest" in problems[0].problem


def test_missing_key_secret_is_reported_and_the_dataset_recovers_when_it_appears(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dataset_name: str, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    upload(raw, "raw-imaging", f"{dataset_name}/")
    make_reader_secret(kubectl, namespace)
    kubectl.apply(dataset_manifest(dataset_name, namespace, "raw-imaging", f"{dataset_name}/"))
    body = kubectl.wait_for(lambda d: ready(d).get("reason") == "SecretNotFound", "dataset", dataset_name)
    assert f"{namespace}/site-key" in ready(body)["message"]
    assert body["status"]["phase"] == "Failed"
    assert "snapshot" not in body["status"]

    kubectl.run(
        "create",
        "secret",
        "generic",
        "site-key",
        "-n",
        namespace,
        f"--from-literal=key={base64.b64encode(os.urandom(32)).decode()}",
    )
    kubectl.wait_for(lambda d: ready(d).get("status") == "True", "dataset", dataset_name, timeout=120)


def test_empty_source_says_so(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dataset_name: str
) -> None:
    make_secrets(kubectl, namespace, os.urandom(32))
    kubectl.apply(dataset_manifest(dataset_name, namespace, "raw-imaging", f"nothing-here-{dataset_name}/"))
    body = kubectl.wait_for(lambda d: ready(d).get("reason") == "SourceEmpty", "dataset", dataset_name)
    assert "holds no files" in ready(body)["message"]


def test_derived_anonymized_dataset_from_a_pseudonymized_snapshot(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dataset_name: str, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for index in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(raw / f"ct-{index}.dcm")
    upload(raw, "raw-imaging", f"{dataset_name}/")
    make_secrets(kubectl, namespace, os.urandom(32))
    kubectl.apply(dataset_manifest(dataset_name, namespace, "raw-imaging", f"{dataset_name}/"))
    site = kubectl.wait_for(lambda d: ready(d).get("status") == "True", "dataset", dataset_name, timeout=120)

    derived = f"{dataset_name}-central"
    body = copy.deepcopy(dataset_manifest(derived, namespace, "x-unused", ""))
    body["spec"]["source"] = {"dataset": {"name": dataset_name}}
    body["spec"]["deidentification"] = {"method": "Anonymize"}
    kubectl.apply(body)
    try:
        central = kubectl.wait_for(
            lambda d: ready(d).get("status") == "True", "dataset", derived, timeout=120
        )
        assert central["status"]["snapshot"]["files"] == 3
        manifest = snapshot_store().manifest(derived, central["status"]["snapshot"]["digest"])
        assert manifest["deidentification"] == {
            **manifest["deidentification"],
            "method": "Anonymize",
            "keyId": "discarded",
        }
        assert (
            manifest["source"]["location"] == f"dataset/{dataset_name}@{site['status']['snapshot']['digest']}"
        )
        site_manifest = snapshot_store().manifest(dataset_name, site["status"]["snapshot"]["digest"])
        assert {f["path"].split("/")[0] for f in manifest["files"]}.isdisjoint(
            {f["path"].split("/")[0] for f in site_manifest["files"]}
        )
    finally:
        kubectl.run("delete", "dataset", derived, "--wait=false", check=False)


def test_killing_the_operator_mid_ingest_ends_in_exactly_one_snapshot(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dataset_name: str, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for index in range(400):
        template.SOPInstanceUID = generate_uid()
        template.InstanceNumber = index
        template.save_as(raw / f"ct-{index:04d}.dcm")
    upload(raw, "raw-imaging", f"{dataset_name}/")
    make_secrets(kubectl, namespace, os.urandom(32))
    kubectl.apply(dataset_manifest(dataset_name, namespace, "raw-imaging", f"{dataset_name}/"))
    kubectl.wait_for(
        lambda d: d.get("status", {}).get("phase") == "Ingesting", "dataset", dataset_name, timeout=60
    )
    operator.kill()
    operator.start()
    body = kubectl.wait_for(lambda d: ready(d).get("status") == "True", "dataset", dataset_name, timeout=240)
    snapshots = snapshot_store().snapshots(dataset_name)
    assert len(snapshots) == 1
    assert snapshots[0][0] == body["status"]["snapshot"]["digest"]
    assert body["status"]["snapshot"]["files"] == 400
