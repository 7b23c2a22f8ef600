"""DICOMweb sources against a real Orthanc PACS (QIDO-RS to list, WADO-RS to fetch), through the operator."""

from __future__ import annotations

import base64
import io
import os
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest

from cleanroom.sources import DicomWebReader, SourceError
from tests import phi_corpus
from tests.integration.conftest import STATE, Kubectl, OperatorProcess
from tests.integration.test_dataset_ingest import ready, snapshot_store


def orthanc_env() -> dict[str, str]:
    path = STATE / "orthanc.env"
    if not path.exists():
        pytest.fail("Orthanc is not running: `make cluster-up` starts it (hack/orthanc-up.sh)")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def upload(paths: list[Path]) -> str:
    """Store instances in Orthanc through its REST API; return their study UID."""
    env = orthanc_env()
    auth = base64.b64encode(f"{env['ORTHANC_USER']}:{env['ORTHANC_PASSWORD']}".encode()).decode()
    for path in paths:
        request = urllib.request.Request(
            env["ORTHANC_URL"] + "/instances",
            data=path.read_bytes(),
            method="POST",
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/dicom"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    return str(pydicom.dcmread(paths[0]).StudyInstanceUID)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[phi_corpus.CorpusFile]]:
    corpus = phi_corpus.build(tmp_path_factory.mktemp("pacs"))
    dicom = [f for f in corpus if f.name in ("ct-1.dcm", "ct-2.dcm", "mr-1.dcm", "ct-burned-in.dcm")]
    return upload([f.path for f in dicom]), dicom


def reader(study_uid: str, password: str | None = None) -> DicomWebReader:
    env = orthanc_env()
    return DicomWebReader(
        env["ORTHANC_URL"] + "/dicom-web",
        (study_uid,),
        env["ORTHANC_USER"],
        password or env["ORTHANC_PASSWORD"],
    )


def test_qido_lists_and_wado_fetches_every_instance(study: tuple[str, list[Any]]) -> None:
    study_uid, files = study
    source = reader(study_uid)
    items = source.items()
    assert len(items) == len(files)
    fetched = {pydicom.dcmread(io.BytesIO(source.read(item))).SOPInstanceUID for item in items}
    assert fetched == {pydicom.dcmread(f.path).SOPInstanceUID for f in files}


def test_wrong_credentials_are_a_clear_source_error(study: tuple[str, list[Any]]) -> None:
    with pytest.raises(SourceError, match="401"):
        reader(study[0], password="wrong").items()


def test_dicomweb_dataset_is_ingested_by_the_operator(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, study: tuple[str, list[Any]]
) -> None:
    study_uid, files = study
    env = orthanc_env()
    kubectl.run(
        "create",
        "secret",
        "generic",
        "pacs",
        "-n",
        namespace,
        f"--from-literal=username={env['ORTHANC_USER']}",
        f"--from-literal=password={env['ORTHANC_PASSWORD']}",
    )
    kubectl.run(
        "create",
        "secret",
        "generic",
        "site-key",
        "-n",
        namespace,
        f"--from-literal=key={base64.b64encode(os.urandom(32)).decode()}",
    )
    name = f"pacs-{uuid.uuid4().hex[:8]}"
    kubectl.apply(
        {
            "apiVersion": "cleanroom.dev/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": name},
            "spec": {
                "source": {
                    "dicomweb": {
                        "url": env["ORTHANC_URL"] + "/dicom-web",
                        "studyInstanceUIDs": [study_uid],
                        "credentialsSecretRef": {"namespace": namespace, "name": "pacs"},
                    }
                },
                "deidentification": {
                    "method": "Pseudonymize",
                    "keySecretRef": {"namespace": namespace, "name": "site-key"},
                },
            },
        }
    )
    try:
        body = kubectl.wait_for(lambda d: ready(d).get("status") == "True", "dataset", name, timeout=120)
        assert body["status"]["snapshot"]["files"] == len(files) - 1
        assert body["status"]["quarantine"]["files"] == 1
        manifest = snapshot_store().manifest(name, body["status"]["snapshot"]["digest"])
        assert manifest["source"] == {"kind": "dicomweb", "location": env["ORTHANC_URL"] + "/dicom-web"}
        for entry in manifest["files"]:
            data = snapshot_store().get_object(entry["digest"]) or b""
            assert not any(token.encode() in data for token in phi_corpus.TOKENS)
    finally:
        kubectl.run("delete", "dataset", name, "--wait=false", check=False)
