from typing import Any

from cleanroom.api import WorkspaceSpec, decode
from cleanroom.workspaces import assess_dataset, latest_snapshot

DIGEST = "sha256:" + "ab" * 32


def workspace(snapshot: str = "") -> WorkspaceSpec:
    return decode(
        WorkspaceSpec,
        {
            "dataset": {"name": "prostate", "snapshot": snapshot},
            "users": ["alice@hospital.example"],
            "purpose": "Train a lesion segmentation model",
            "image": "registry.example.org/nb:1",
        },
    )


def ready_dataset(digest: str = DIGEST) -> dict[str, Any]:
    return {
        "spec": {},
        "status": {
            "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True"}],
            "snapshot": {"digest": digest},
        },
    }


def test_missing_dataset_is_reported_with_the_name_and_what_to_do() -> None:
    result = assess_dataset(workspace(), None)
    (ready,) = result.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "DatasetNotFound")
    assert '"prostate"' in ready.message and "kubectl get datasets" in ready.message


def test_dataset_without_a_ready_snapshot_keeps_the_workspace_pending() -> None:
    dataset = {
        "spec": {},
        "status": {"phase": "Ingesting", "conditions": [{"type": "Ready", "status": "False"}]},
    }
    result = assess_dataset(workspace(), dataset)
    assert result.phase == "Pending"
    assert result.conditions[0].reason == "DatasetNotReady"
    assert "Ingesting" in result.conditions[0].message


def test_latest_snapshot_is_pinned_when_spec_leaves_it_empty() -> None:
    assert assess_dataset(workspace(), ready_dataset()).snapshot == DIGEST


def test_an_explicit_snapshot_wins_over_the_latest() -> None:
    pinned = "sha256:" + "cd" * 32
    assert assess_dataset(workspace(pinned), ready_dataset()).snapshot == pinned


def test_a_dataset_not_ready_has_no_latest_snapshot_even_with_an_old_digest() -> None:
    dataset = ready_dataset()
    dataset["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert latest_snapshot(dataset) == ""
