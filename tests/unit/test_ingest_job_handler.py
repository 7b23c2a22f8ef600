"""The operator's side of a Job ingest (handlers._ingest_job) over a fake API server: what it makes, what it
reports while shards run, and what it does with a Job whose shards failed."""

from __future__ import annotations

from typing import Any

import pytest

from cleanroom.api import DatasetSpec, DeidentificationMethod, decode
from cleanroom.datasets import IngestFailure, S3Input
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.handlers import _ingest_job
from cleanroom.workspaces.settings import WorkspaceSettings

BODY = {
    "metadata": {"name": "ct", "uid": "uid-1"},
    "spec": {
        "source": {"s3": {"endpoint": "http://s3:7070", "bucket": "raw", "prefix": "p/"}},
        "deidentification": {"method": "Anonymize"},
        "ingest": {"parallelism": 3},
    },
}
PLAN = {"shards": [{}, {}, {}, {}], "files": 40}


class FakeKube:
    def __init__(self, job_status: dict[str, Any], deleting: bool = False) -> None:
        self.job_status, self.deleting = job_status, deleting
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self.progress: list[dict[str, Any]] = []

    def apply(self, manifest: dict[str, Any]) -> None:
        self.applied.append(manifest)

    def ensure_created(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest)
        metadata = {**manifest["metadata"], **({"deletionTimestamp": "now"} if self.deleting else {})}
        return {**manifest, "metadata": metadata, "status": self.job_status}

    def patch_dataset_status(self, name: str, status: dict[str, Any]) -> None:
        self.progress.append(status)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append((kind, namespace, name))
        return True

    def job_failure_message(self, namespace: str, job: str) -> str:
        return "shard 2 failed: ShardRefused: the key in the run's Secret is not the run's"


def _ingest(monkeypatch: pytest.MonkeyPatch, fake: FakeKube) -> _ingest_job.JobIngest:
    for name in ("apply", "ensure_created", "patch_dataset_status", "delete", "job_failure_message"):
        monkeypatch.setattr(_ingest_job._kube, name, getattr(fake, name))
    return _ingest_job.JobIngest(
        BODY,
        decode(DatasetSpec, BODY["spec"]),
        S3Input("http://s3:7070", "raw", "p/", ""),
        None,  # type: ignore[arg-type]
        DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring.random()),
        None,  # type: ignore[arg-type]
        WorkspaceSettings(ingest_namespace="cleanroom-ingest"),
    )


def test_while_shards_run_the_pass_reports_progress_and_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube({"completedIndexes": "0,2", "active": 2})
    with pytest.raises(_ingest_job.ShardsRunning, match="2 of 4"):
        _ingest_job.wait_for_shards(_ingest(monkeypatch, fake), PLAN)
    kinds = [m["kind"] for m in fake.applied]
    assert kinds == ["NetworkPolicy", "Job"]
    job = fake.applied[1]
    assert job["spec"]["completions"] == 4 and job["spec"]["parallelism"] == 3
    assert fake.progress[-1]["progress"] == {
        "filesTotal": 40,
        "shardsDone": 2,
        "shardsTotal": 4,
        "job": f"cleanroom-ingest/{job['metadata']['name']}",
    }
    assert fake.deleted == []


def test_every_shard_done_lets_the_pass_go_on_to_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube({"completedIndexes": "0-3", "conditions": [{"type": "Complete", "status": "True"}]})
    assert _ingest_job.wait_for_shards(_ingest(monkeypatch, fake), PLAN) is None
    assert fake.progress[-1]["progress"]["shardsDone"] == 4


def test_a_job_whose_shards_failed_is_deleted_and_the_pass_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube(
        {
            "completedIndexes": "0,1,3",
            "failedIndexes": "2",
            "conditions": [{"type": "Failed", "status": "True"}],
        }
    )
    with pytest.raises(IngestFailure, match="indexes 2") as failure:
        _ingest_job.wait_for_shards(_ingest(monkeypatch, fake), PLAN)
    assert failure.value.reason == "IngestShardFailed"
    assert "not the run's" in str(failure.value)
    assert [kind for kind, _, _ in fake.deleted] == ["Job"]


def test_a_job_still_being_deleted_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube(
        {"failedIndexes": "2", "conditions": [{"type": "Failed", "status": "True"}]}, deleting=True
    )
    with pytest.raises(_ingest_job.ShardsRunning, match="being deleted"):
        _ingest_job.wait_for_shards(_ingest(monkeypatch, fake), PLAN)
    assert fake.deleted == []


class NoResults:
    """A store where no shard left its result."""

    def document(self, key: str) -> None:
        return None


def test_a_shard_counted_done_without_a_result_is_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube({"completedIndexes": "0-3"})
    ingest = _ingest(monkeypatch, fake)
    ingest = _ingest_job.JobIngest(
        ingest.body,
        ingest.spec,
        ingest.source,
        ingest.reader,
        ingest.deid,
        NoResults(),
        ingest.settings,  # type: ignore[arg-type]
    )
    with pytest.raises(IngestFailure, match="shard 0"):
        _ingest_job.publish_shards(ingest, PLAN, lambda result: None)
    assert [kind for kind, _, _ in fake.deleted] == ["Job"]


def test_a_pass_that_finds_shards_running_is_looked_at_again_and_an_error_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cleanroom.handlers import dataset

    looks: list[tuple[str, float]] = []
    monkeypatch.setattr(dataset, "_look_again", lambda name, seconds: looks.append((name, seconds)))
    monkeypatch.setattr(dataset, "reconcile_dataset", lambda body, logger: 5.0)
    body = {"metadata": {"name": "ct", "generation": 1}, "status": {"phase": "Ingesting"}}
    dataset.dataset_changed(body, retry=0, logger=dataset.log)  # type: ignore[arg-type]
    assert looks == [("ct", 5.0)]

    def broken(body: Any, logger: Any) -> None:
        raise ConnectionError("the API server went away")

    monkeypatch.setattr(dataset, "reconcile_dataset", broken)
    monkeypatch.setattr(dataset._kube, "get_dataset", lambda name: body)
    dataset._timed_pass("ct")
    assert looks[-1][0] == "ct" and looks[-1][1] > 0
    monkeypatch.setattr(dataset, "reconcile_dataset", lambda body, logger: None)
    dataset._timed_pass("ct")
    assert len(looks) == 2, "a pass that is done looks no more"


class RunsStore:
    """A store with the runs of Dataset ct (an older spec's and the current one) and of ct-2."""

    def __init__(self) -> None:
        self.removed: list[str] = []

    def folders(self, prefix: str) -> list[str]:
        return {"ingest/ct/": ["ingest/ct/old/", _ingest_job.JobIngest.prefix.fget(_ingest(None, None))]}.get(
            prefix, []
        )  # type: ignore[attr-defined]

    def remove_prefix(self, prefix: str) -> int:
        self.removed.append(prefix)
        return 1


def test_after_publishing_every_run_of_the_dataset_leaves_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube({})
    ingest = _ingest(monkeypatch, fake)
    store = RunsStore()
    ingest = _ingest_job.JobIngest(
        ingest.body,
        ingest.spec,
        ingest.source,
        ingest.reader,
        ingest.deid,
        store,
        ingest.settings,  # type: ignore[arg-type]
    )
    _ingest_job.clean_up(ingest)
    assert store.removed == ["ingest/ct/"]
    assert sorted(kind for kind, _, _ in fake.deleted) == ["Job", "NetworkPolicy", "Secret"]


def test_a_deleted_dataset_is_swept_from_the_store_now_and_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cleanroom.handlers import dataset

    store = RunsStore()
    scheduled: list[tuple[object, float]] = []
    back: dict[str, object] = {}
    monkeypatch.setattr(dataset, "SnapshotStore", lambda location: store)
    monkeypatch.setattr(dataset.config, "snapshot_location", lambda: None)
    monkeypatch.setattr(dataset._kube, "get_dataset", lambda name: back.get(name))
    monkeypatch.setattr(
        dataset.CLOCK, "schedule", lambda key, when, action: scheduled.append((key, when)) or action
    )
    dataset.dataset_deleted(name="ct", logger=dataset.log)
    assert store.removed == ["ingest/ct/"]
    assert [key for key, _ in scheduled] == [("dataset-runs", "ct")]
    # A Dataset of that name made again meanwhile: its runs are its own.
    back["ct"] = {"metadata": {"name": "ct"}}
    dataset.sweep_runs("ct", dataset.log)
    assert store.removed == ["ingest/ct/"]


def _s3_listing(keys: list[str]) -> Any:
    from collections.abc import Iterator

    from cleanroom.sources import S3Reader

    class Listed(S3Reader):
        def _keys(self) -> Iterator[str]:
            yield from keys

    return Listed("http://s3:7070", "raw", "p/")


def test_an_s3_listing_is_streamed_each_time_it_is_read() -> None:
    keys = ["p/a.dcm", "p/b.dcm", "p/c.dcm"]
    again, listing = _ingest_job._listing(_s3_listing(keys))
    assert not isinstance(again(), list)  # a fresh pass over the store, not a list held
    assert list(again()) == keys and listing.files == 3


def test_a_store_that_lists_out_of_order_is_planned_from_its_sorted_listing() -> None:
    """A store that does not keep S3's order: the run is planned from the sorted listing (held), the same
    plan as from a store that keeps it."""
    again, listing = _ingest_job._listing(_s3_listing(["p/b.dcm", "p/a.dcm", "p/c.dcm"]))
    ordered, expected = _ingest_job._listing(_s3_listing(["p/a.dcm", "p/b.dcm", "p/c.dcm"]))
    assert list(again()) == list(ordered()) == ["p/a.dcm", "p/b.dcm", "p/c.dcm"]
    assert listing == expected


def test_a_listing_changed_while_planned_fails_the_pass_to_plan_again() -> None:
    from cleanroom.datasets.sharding import source_changed

    failure = source_changed("the source listed 3 files when the run was planned and other files")
    assert isinstance(failure, IngestFailure) and failure.reason == "SourceChanged"
    assert "planned again" in str(failure)
