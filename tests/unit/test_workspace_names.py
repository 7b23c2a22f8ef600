"""Every name the operator derives from a Workspace or Dataset name is one the API server accepts."""

from __future__ import annotations

import re

import pytest

from cleanroom.workspaces import WorkspaceRef
from cleanroom.workspaces.manifests import labels

# apimachinery's IsValidLabelValue.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize(
    "dataset",
    [
        "prostate",
        "a" * 62 + ".b",  # a dot at character 63: cut there, the label would end in a dot
        "mri." * 40 + "x",  # 161 characters, the longest the API allows is 253
        "x" * 63,
    ],
)
def test_dataset_names_become_valid_label_values(dataset: str) -> None:
    ref = WorkspaceRef(name="seg", namespace="team", uid="u", snapshot="sha256:" + "a" * 64, dataset=dataset)
    value = labels(ref, "notebook")["cleanroom.dev/dataset"]
    assert len(value) <= 63 and LABEL_VALUE.match(value), value
    other = WorkspaceRef(**{**ref.__dict__, "dataset": dataset + "z"})
    assert labels(other, "notebook")["cleanroom.dev/dataset"] != value or len(dataset) <= 63
