"""The real API server rejects bad Datasets and Workspaces with a message that names the field to fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.integration.conftest import Kubectl

VALID_WORKSPACE: dict[str, Any] = {
    "apiVersion": "cleanroom.dev/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "seg"},
    "spec": {
        "dataset": {"name": "prostate-mri-2024"},
        "users": ["alice@hospital.example"],
        "purpose": "Train a lesion segmentation model for study PCa-2024-07",
        "image": "registry.example.org/cleanroom/notebook-cuda:2026.11",
        "resources": {
            "gpu": 1,
            "gpuType": "nvidia-a100-80gb",
            "cpu": "8",
            "memory": "64Gi",
            "homeStorage": "50Gi",
        },
        "lifetime": {"expiresAfter": "168h", "idleTimeout": "2h"},
        "running": True,
    },
}

VALID_DATASET: dict[str, Any] = {
    "apiVersion": "cleanroom.dev/v1alpha1",
    "kind": "Dataset",
    "metadata": {"name": "prostate-mri-2024"},
    "spec": {
        "description": "Prostate mpMRI from three sites, 2019-2024",
        "source": {
            "s3": {
                "endpoint": "http://s3.cleanroom-system:7070",
                "bucket": "raw-imaging",
                "prefix": "prostate/2024/",
                "credentialsSecretRef": {"namespace": "cleanroom-system", "name": "raw-imaging-reader"},
            }
        },
        "deidentification": {
            "method": "Pseudonymize",
            "keySecretRef": {"namespace": "cleanroom-system", "name": "site-pseudonym-key"},
            "options": [
                "RetainLongitudinalTemporalInformationModifiedDates",
                "CleanDescriptors",
                "RetainPatientCharacteristics",
            ],
            "burnedInAnnotations": "Quarantine",
        },
        "access": {"groups": ["prostate-ai"], "users": []},
        "retention": {"keepSnapshots": 3},
    },
}


def edited(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of base with the dotted path set to value (or removed when value is ...)."""
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


WORKSPACE_CASES = [
    ("negative GPU count", "spec.resources.gpu", -1, ["spec.resources.gpu", "greater than or equal to 0"]),
    ("absurd GPU count", "spec.resources.gpu", 1000, ["spec.resources.gpu", "less than or equal to 16"]),
    ("missing purpose", "spec.purpose", ..., ["spec.purpose", "Required value"]),
    ("one-word purpose", "spec.purpose", "research", ["spec.purpose", "at least 10 chars"]),
    ("empty users", "spec.users", [], ["spec.users", "at least 1 items"]),
    ("user with spaces", "spec.users", ["alice smith"], ["spec.users[0]", "may not contain spaces"]),
    (
        "user with a line break",
        "spec.users",
        ["alice@hospital.example\nmallory@evil.example"],
        ["spec.users[0]", "may not contain a line break"],
    ),
    (
        "name with a dot (no Service can carry it)",
        "metadata.name",
        "team.alice",
        ["at most 63 characters and hold no dots", "team-alice rather than team.alice"],
    ),
    (
        "name too long for a label",
        "metadata.name",
        "a" * 64,
        ["at most 63 characters and hold no dots"],
    ),
    ("malformed duration", "spec.lifetime.expiresAfter", "1week", ["spec.lifetime.expiresAfter", "duration"]),
    ("zero duration", "spec.lifetime.idleTimeout", "0s", ["spec.lifetime.idleTimeout", "positive duration"]),
    ("malformed memory", "spec.resources.memory", "lots", ["spec.resources.memory", "memory quantity"]),
    ("absurd cpu", "spec.resources.cpu", "100000", ["spec.resources.cpu", "between 1m and 256"]),
    (
        "negative storage",
        "spec.resources.homeStorage",
        "-5Gi",
        ["spec.resources.homeStorage", "storage quantity"],
    ),
    ("gpuType without GPU", "spec.resources.gpu", 0, ["spec.resources.gpuType", "gpuType needs gpu"]),
    ("bad snapshot digest", "spec.dataset.snapshot", "latest", ["spec.dataset.snapshot", "sha256"]),
    ("image with a space", "spec.image", "nb; rm -rf /", ["spec.image", "image reference"]),
    ("missing dataset", "spec.dataset", ..., ["spec.dataset", "Required value"]),
    ("privileged smuggled in", "spec.privileged", True, ['unknown field "spec.privileged"']),
    ("hostPath smuggled in", "spec.resources.hostPath", "/", ['unknown field "spec.resources.hostPath"']),
]

DATASET_CASES = [
    (
        "two sources",
        "spec.source.directory",
        {"path": "/mnt/raw"},
        ["spec.source", "set exactly one of source.s3, source.dicomweb"],
    ),
    ("no source", "spec.source", {}, ["spec.source", "set exactly one"]),
    (
        "Pseudonymize without a key",
        "spec.deidentification.keySecretRef",
        ...,
        ["spec.deidentification.keySecretRef", "needs keySecretRef"],
    ),
    (
        "unknown option",
        "spec.deidentification.options",
        ["RetainEverything"],
        ["spec.deidentification.options[0]", 'Unsupported value: "RetainEverything"'],
    ),
    (
        "both longitudinal options",
        "spec.deidentification.options",
        [
            "RetainLongitudinalTemporalInformationFullDates",
            "RetainLongitudinalTemporalInformationModifiedDates",
        ],
        ["spec.deidentification.options", "exclude each other"],
    ),
    (
        "unknown method",
        "spec.deidentification.method",
        "Scramble",
        ["spec.deidentification.method", "Unsupported"],
    ),
    (
        "bad bucket name",
        "spec.source.s3.bucket",
        "Raw_Imaging",
        ["spec.source.s3.bucket", "valid S3 bucket name"],
    ),
    (
        "endpoint not a URL",
        "spec.source.s3.endpoint",
        "s3.local",
        ["spec.source.s3.endpoint", "http:// or https://"],
    ),
    (
        "keep no snapshot",
        "spec.retention.keepSnapshots",
        0,
        ["spec.retention.keepSnapshots", "greater than or equal to 1"],
    ),
    ("missing de-identification", "spec.deidentification", ..., ["spec.deidentification", "Required value"]),
    (
        "burned-in policy typo",
        "spec.deidentification.burnedInAnnotations",
        "Keep",
        ["burnedInAnnotations", "Unsupported"],
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "expected"), WORKSPACE_CASES, ids=[c[0] for c in WORKSPACE_CASES]
)
def test_invalid_workspace_is_rejected_naming_the_field(
    kubectl: Kubectl, namespace: str, case: str, path: str, value: Any, expected: list[str]
) -> None:
    body = edited(VALID_WORKSPACE, path, value)
    if case == "gpuType without GPU":
        assert body["spec"]["resources"]["gpuType"]
    result = kubectl.apply(body, "-n", namespace, "--dry-run=server", check=False)
    assert result.returncode != 0, f"{case}: the API server accepted it"
    for fragment in expected:
        assert fragment in result.stderr, f"{case}: {fragment!r} not in:\n{result.stderr}"


@pytest.mark.parametrize(
    ("case", "path", "value", "expected"), DATASET_CASES, ids=[c[0] for c in DATASET_CASES]
)
def test_invalid_dataset_is_rejected_naming_the_field(
    kubectl: Kubectl, case: str, path: str, value: Any, expected: list[str]
) -> None:
    result = kubectl.apply(edited(VALID_DATASET, path, value), "--dry-run=server", check=False)
    assert result.returncode != 0, f"{case}: the API server accepted it"
    for fragment in expected:
        assert fragment in result.stderr, f"{case}: {fragment!r} not in:\n{result.stderr}"


def test_anonymize_refuses_a_key(kubectl: Kubectl) -> None:
    body = edited(VALID_DATASET, "spec.deidentification.method", "Anonymize")
    result = kubectl.apply(body, "--dry-run=server", check=False)
    assert result.returncode != 0
    assert "Anonymize is irreversible and takes no keySecretRef" in result.stderr


def test_valid_examples_are_accepted_and_defaulted(
    kubectl: Kubectl, namespace: str, unique_name: str
) -> None:
    dataset = edited(VALID_DATASET, "metadata.name", unique_name)
    dataset["spec"]["deidentification"].pop("burnedInAnnotations")
    dataset["spec"].pop("retention")
    kubectl.apply(dataset)
    try:
        stored = kubectl.get("dataset", unique_name)
        assert stored["spec"]["deidentification"]["burnedInAnnotations"] == "Quarantine"
        assert stored["spec"]["deidentification"]["keySecretRef"]["key"] == "key"
        assert stored["spec"]["retention"] == {"keepSnapshots": 3}
    finally:
        kubectl.run("delete", "dataset", unique_name, "--wait=false")

    minimal = copy.deepcopy(VALID_WORKSPACE)
    for field in ("resources", "lifetime", "running"):
        minimal["spec"].pop(field)
    kubectl.apply(minimal, "-n", namespace)
    stored = kubectl.get("workspace", "seg", "-n", namespace)
    assert stored["spec"]["resources"] == {"gpu": 0, "cpu": "2", "memory": "8Gi", "homeStorage": "10Gi"}
    assert stored["spec"]["lifetime"] == {"expiresAfter": "168h", "idleTimeout": "2h"}
    assert stored["spec"]["running"] is True
    assert stored["spec"]["dataset"]["snapshot"] == ""


def test_integer_cpu_is_a_valid_quantity(kubectl: Kubectl, namespace: str) -> None:
    body = edited(VALID_WORKSPACE, "spec.resources.cpu", 8)
    assert kubectl.apply(body, "-n", namespace, "--dry-run=server", check=False).returncode == 0


@pytest.mark.parametrize(
    ("resource", "must_mention"),
    [
        ("workspace.spec.resources", ["gpu", "nvidia.com/gpu", "gpuType", "homeStorage", "quantity"]),
        ("workspace.spec.purpose", ["GDPR purpose limitation"]),
        ("workspace.status.conditions", ["kubectl wait", "observedGeneration"]),
        ("dataset.spec.deidentification", ["PS3.15", "keySecretRef", "burnedInAnnotations"]),
        ("dataset.spec.source", ["exactly one", "dicomweb", "directory"]),
    ],
)
def test_kubectl_explain_reads_like_a_manual(
    kubectl: Kubectl, resource: str, must_mention: list[str]
) -> None:
    text = kubectl.run("explain", resource).stdout
    for word in must_mention:
        assert word in text, f"{word!r} missing from `kubectl explain {resource}`:\n{text}"


def test_printer_columns_and_short_names(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(VALID_WORKSPACE, "-n", namespace)
    header = kubectl.run("get", "ws", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "PHASE", "DATASET", "SNAPSHOT", "GPU", "USERS", "AGE"]
    header = kubectl.run("get", "dset").stdout.splitlines()
    assert not header or header[0].split()[:4] == ["NAME", "READY", "PHASE", "SNAPSHOT"]
