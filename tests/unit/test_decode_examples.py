from pathlib import Path

import yaml

from cleanroom.api import (
    BurnedInAnnotationPolicy,
    DatasetSpec,
    DeidentificationMethod,
    DeidentificationOption,
    WorkspaceSpec,
    decode,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def documents(name: str) -> list[dict]:  # type: ignore[type-arg]
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def test_sample_dataset_decodes_to_typed_spec() -> None:
    (body,) = documents("dataset.yaml")
    spec = decode(DatasetSpec, body["spec"])
    assert spec.source.kind == "s3"
    assert spec.source.s3 is not None and spec.source.s3.bucket == "raw-imaging"
    assert spec.deidentification.method is DeidentificationMethod.PSEUDONYMIZE
    assert DeidentificationOption.CLEAN_DESCRIPTORS in spec.deidentification.options
    assert spec.deidentification.burned_in_annotations is BurnedInAnnotationPolicy.QUARANTINE
    assert spec.deidentification.key_secret_ref is not None
    assert spec.deidentification.key_secret_ref.key == "key"
    assert spec.access.allows("alice@hospital.example")
    assert spec.access.allows("bob@hospital.example", ("sample-ai",))
    assert not spec.access.allows("mallory@elsewhere.example", ("other",))


def test_sample_workspace_decodes_with_quantities_as_strings() -> None:
    body = next(d for d in documents("workspace.yaml") if d["kind"] == "Workspace")
    spec = decode(WorkspaceSpec, body["spec"])
    assert spec.resources.gpu == 1
    assert spec.resources.cpu == "4"
    assert spec.users == ("alice@hospital.example",)
    assert spec.running is True


def test_integer_cpu_decodes_to_a_quantity_string() -> None:
    spec = decode(
        WorkspaceSpec,
        {
            "dataset": {"name": "d"},
            "users": ["u"],
            "purpose": "p" * 10,
            "image": "i",
            "resources": {"cpu": 8},
        },
    )
    assert spec.resources.cpu == "8"
