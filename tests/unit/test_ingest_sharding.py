"""A Dataset's ingest as an Indexed Job: the split into shards, where a run goes, what the Job says, the
objects the operator makes for a run, and what a shard pod records (the join: test_ingest_shards_publish.py)."""

from __future__ import annotations

import base64
import itertools

import pytest

from cleanroom.api import DeidentificationMethod, IngestResources
from cleanroom.datasets import DicomWebInput, DirectoryInput, S3Input, SnapshotInput
from cleanroom.datasets.ingest_job import (
    IngestRun,
    build_ingest_job,
    build_ingest_network_policy,
    build_ingest_secret,
    job_name,
)
from cleanroom.datasets.sharding import (
    MAX_SHARDS,
    PodShape,
    dataset_prefix,
    judge_job,
    leftover_runs,
    orphaned_runs,
    parse_indexes,
    pod_shape,
    run_name,
    run_prefix,
    split,
    where_ingest_runs,
    worker_processes,
)
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest.shard_worker import ShardRefused, deid_config, multipart, shard_document
from cleanroom.snapshots import FileEntry
from cleanroom.workspaces.settings import WorkspaceSettings

S3 = S3Input("http://s3:7070", "raw", "sample/", "")


def test_split_covers_the_listing_once_in_order_with_even_shards() -> None:
    ranges = split(1001, 100)
    assert len(ranges) == 11
    assert ranges[0][0] == 0 and ranges[-1][1] == 1001
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = {end - start for start, end in ranges}
    assert max(sizes) <= 100 and max(sizes) - min(sizes) <= 1


def test_split_is_a_function_of_its_arguments_alone() -> None:
    assert split(20_000, 500) == split(20_000, 500)
    assert split(0, 500) == []
    assert split(3, 500) == [(0, 3)]
    assert split(5, 1) == [(i, i + 1) for i in range(5)]


def test_split_never_makes_more_shards_than_kubernetes_admits() -> None:
    assert len(split(MAX_SHARDS * 3, 1)) == MAX_SHARDS


def test_run_name_follows_the_origin() -> None:
    origin = {"uid": "u-1", "specHash": "sha256:aa"}
    assert run_name(origin) == run_name(dict(origin))
    assert run_name(origin) != run_name({"uid": "u-1", "specHash": "sha256:bb"})
    assert len(run_name(origin)) == 16


def test_parse_indexes_reads_kubernetes_interval_lists() -> None:
    assert parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert parse_indexes("") == set()


def test_job_judged_running_complete_and_failed() -> None:
    assert judge_job({}, 3) == judge_job({"completedIndexes": ""}, 3)
    running = judge_job({"completedIndexes": "0,2", "active": 1}, 3)
    assert (running.done, running.complete, running.ended) == (2, False, False)
    done = judge_job({"completedIndexes": "0-2", "conditions": [{"type": "Complete", "status": "True"}]}, 3)
    assert done.complete and not done.failed
    failed = judge_job(
        {
            "completedIndexes": "0,2",
            "failedIndexes": "1",
            "conditions": [{"type": "Failed", "status": "True"}],
        },
        3,
    )
    assert failed.ended and failed.failed == (1,) and not failed.complete


def test_an_index_out_of_retries_does_not_stop_the_other_shards() -> None:
    """backoffLimitPerIndex: the Job runs the other indexes on and fails only once they are done."""
    state = judge_job({"completedIndexes": "0", "failedIndexes": "1", "active": 1}, 3)
    assert state.failed == (1,) and not state.ended and not state.complete


def test_a_retried_index_still_running_is_not_the_end() -> None:
    """A pod killed once: the index is retried (backoffLimitPerIndex), not yet in failedIndexes."""
    state = judge_job({"completedIndexes": "1", "active": 1, "failed": 1}, 2)
    assert not state.ended and not state.complete


@pytest.mark.parametrize(
    ("mode", "source", "simulated", "as_job"),
    [
        ("job", S3, False, True),
        ("job", SnapshotInput("parent", "sha256:" + "a" * 64), False, True),
        ("job", S3, True, False),
        ("job", DirectoryInput("/raw"), False, False),
        ("job", DicomWebInput("http://pacs", ()), False, False),
        ("in-process", S3, False, False),
    ],
)
def test_where_an_ingest_runs(mode: str, source: object, simulated: bool, as_job: bool) -> None:
    where = where_ingest_runs(mode, source, simulated)  # type: ignore[arg-type]
    assert where.as_job is as_job
    assert where.why


def test_pod_shape_takes_the_dataset_over_the_site() -> None:
    site = WorkspaceSettings(
        ingest_parallelism=2, ingest_files_per_shard=500, ingest_cpu="1", ingest_memory="1Gi"
    )
    assert pod_shape(IngestResources(), site) == PodShape(2, 500, "1", "1Gi")
    assert pod_shape(IngestResources(parallelism=4, cpu="2"), site) == PodShape(4, 500, "2", "1Gi")
    assert [worker_processes(c) for c in ("500m", "1", "2", "2500m")] == [1, 1, 2, 2]


RUN = IngestRun("sample-ct", "uid-1", "0123456789abcdef", 7)


def test_ingest_job_is_indexed_one_shard_per_index_retried_alone() -> None:
    settings = WorkspaceSettings(ingest_backoff_limit_per_index=3, ingest_namespace="cleanroom-ingest")
    job = build_ingest_job(RUN, PodShape(10, 500, "2", "2Gi"), settings)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 7 and spec["parallelism"] == 7
    assert spec["backoffLimitPerIndex"] == 3
    assert job["metadata"]["namespace"] == "cleanroom-ingest"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"] == ["ingest-shard", "--workers", "2"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets == {"ds-sample-ct-ingest"}
    assert all(set(v) <= {"name", "emptyDir"} for v in pod["volumes"])
    assert len(job_name(RUN)) <= 63


def test_ingest_secret_holds_the_grant_and_the_key_only() -> None:
    secret = build_ingest_secret(RUN, WorkspaceSettings(), "http://s3/grant", b"k" * 32, None)
    assert set(secret["stringData"]) == {"grantUrl", "deidKey"}
    assert base64.b64decode(secret["stringData"]["deidKey"]) == b"k" * 32
    with_table = build_ingest_secret(RUN, WorkspaceSettings(), "u", b"k" * 32, {"P1": "EU-1"})
    assert with_table["stringData"]["pseudonymTable"] == '{"P1": "EU-1"}'


def test_shard_pods_reach_only_the_store_and_dns() -> None:
    policy = build_ingest_network_policy(RUN, WorkspaceSettings(snapshot_egress_port=7070))
    assert policy["spec"]["ingress"] == []
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {7070, 53}
    source = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    wider = build_ingest_network_policy(RUN, WorkspaceSettings(ingest_source_egress=(source,)))
    assert wider["spec"]["egress"][-1] == source


def test_a_shard_refuses_a_key_that_is_not_the_runs() -> None:
    run_key = Keyring(b"r" * 32)
    plan = {
        "keyId": run_key.key_id,
        "method": "Pseudonymize",
        "options": [],
        "burnedInAnnotations": "Quarantine",
        "pseudonymTable": False,
    }
    config = deid_config(plan, b"r" * 32, None)
    assert isinstance(config, DeidConfig) and config.method is DeidentificationMethod.PSEUDONYMIZE
    with pytest.raises(ShardRefused, match="not the run's"):
        deid_config(plan, b"s" * 32, None)


def test_upload_form_carries_the_policy_fields_then_the_file_last() -> None:
    body, content_type = multipart([("key", "ingest/d/r/out/objects/ab"), ("policy", "cG9s")], b"\x00DICM")
    boundary = content_type.split("boundary=")[1]
    parts = body.split(f"--{boundary}".encode())
    assert b'name="key"' in parts[1] and b"ingest/d/r/out/objects/ab" in parts[1]
    assert b'name="file"' in parts[3] and parts[3].rstrip(b"\r\n").endswith(b"\x00DICM")
    assert parts[-1].startswith(b"--")


def _entry(path: str, digest: str) -> FileEntry:
    return FileEntry(path, digest, 10, "PSN-1", "1.2", "1.2.3", "CT", "", (("PatientName", "name"),))


def test_shard_document_lists_kept_files_sorted_with_their_origins() -> None:
    from cleanroom.ingest import IngestResult

    result = IngestResult(
        files=[_entry("b.dcm", "sha256:02"), _entry("a.dcm", "sha256:01")],
        origins={"b.dcm": "raw/b", "a.dcm": "raw/a"},
    )
    document = shard_document(4, result)
    assert document["index"] == 4
    assert [f["path"] for f in document["files"]] == ["a.dcm", "b.dcm"]
    assert document["files"][0]["patient"] == "PSN-1"


def test_a_plan_made_again_from_the_same_listing_keeps_its_shards_results() -> None:
    """The digest a plan records of its listing: equal for the same sorted listing, so a plan re-signed
    when its grant runs out keeps the results of the shards already done; any other listing starts over."""
    from cleanroom.ingest.sharded import listing_digest

    assert listing_digest(["a", "b"]) == listing_digest(["a", "b"])
    assert listing_digest(["a", "b"]) != listing_digest(["a", "b", "c"])
    assert listing_digest(["ab"]) != listing_digest(["a", "b"])


def test_a_datasets_older_runs_are_leftovers_and_its_current_run_is_not() -> None:
    folders = ["ingest/ct/aaaa/", "ingest/ct/bbbb/", "ingest/ct/cccc/"]
    assert leftover_runs(folders, run_prefix("ct", "bbbb")) == ["ingest/ct/aaaa/", "ingest/ct/cccc/"]
    assert leftover_runs([], run_prefix("ct", "bbbb")) == []


def test_only_the_runs_of_datasets_that_are_gone_are_orphaned() -> None:
    folders = [dataset_prefix(name) for name in ("ct", "ct-2", "gone", "mr")]
    # "ct" alive does not keep "ct-2" (a name that begins with it), nor the reverse.
    assert orphaned_runs(folders, ["ct", "mr"]) == ["ingest/ct-2/", "ingest/gone/"]
    assert orphaned_runs(folders, ["ct-2", "gone"]) == ["ingest/ct/", "ingest/mr/"]
    assert orphaned_runs(folders, []) == sorted(folders)
    assert run_prefix("ct", "r1").startswith(dataset_prefix("ct"))
