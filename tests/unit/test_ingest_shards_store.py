"""A Dataset's ingest in shards against the real versitygw binary the chart runs (started here over a temporary
directory): the operator's plan, each shard as its pod runs it (``ingest-shard``: presigned reads, uploads
with the run's POST policy, no key), the join and the publication give the same snapshot files, byte for
byte, as the in-process ingest of the same source with the same key; a shard done is not done again; the
upload policy admits nothing outside the run's prefix, and an object whose bytes are not its name is refused."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.error import S3Error

from cleanroom.api import BurnedInAnnotationPolicy, DeidentificationMethod
from cleanroom.datasets.sharding import run_prefix, split
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest import Limits, StoreSink, publish, run
from cleanroom.ingest.shard_worker import PostSink, run_shard
from cleanroom.ingest.sharded import (
    ListingChanged,
    RunPlan,
    entry_to_json,
    plan_key,
    result_key,
    shard_plan_key,
    staged_key,
    summarize,
    write_plan,
)
from cleanroom.ingest.sharded_publish import Joined, publish_shards
from cleanroom.snapshots import (
    FileEntry,
    S3Location,
    SnapshotError,
    SnapshotStore,
    canonical_json,
    content_digest,
    manifest_key,
    object_key,
)
from cleanroom.snapshots.store import presigner
from cleanroom.sources import S3Reader
from tests import phi_corpus
from tests.unit.test_outbox_reader import ROOT_KEY, ROOT_SECRET, server

__all__ = ["server"]

KEY = b"k" * 32
ORIGIN = {"uid": "u-1", "specHash": "sha256:00"}
NOW = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.fixture
def stores(server: str, tmp_path: Path) -> Iterator[tuple[str, S3Reader]]:
    endpoint = f"http://{server}"
    client = Minio(server, ROOT_KEY, ROOT_SECRET, secure=False)
    for bucket in ("raw", "cleanroom-snapshots", "reference"):
        client.make_bucket(bucket)
    for item in phi_corpus.build(tmp_path / "corpus"):
        client.fput_object("raw", f"site/{item.name}", str(item.path))
    yield endpoint, S3Reader(endpoint, "raw", "site/", "", ROOT_KEY, ROOT_SECRET)


def _store(endpoint: str, bucket: str) -> SnapshotStore:
    return SnapshotStore(S3Location(endpoint, bucket, ROOT_KEY, ROOT_SECRET))


def _config() -> DeidConfig:
    return DeidConfig(
        DeidentificationMethod.PSEUDONYMIZE,
        Keyring(KEY),
        burned_in_annotations=BurnedInAnnotationPolicy.QUARANTINE,
    )


def _publish_shards(store: SnapshotStore, prefix: str, shards: int, reader: S3Reader) -> Joined:
    return publish_shards(
        store,
        prefix,
        shards,
        dataset="ds",
        reader=reader,
        config=_config(),
        origin=ORIGIN,
        missing=AssertionError,
        refuse=lambda result: None,
        now=NOW,
    )


def _plan(endpoint: str, reader: S3Reader, per_shard: int) -> tuple[SnapshotStore, str, str, int]:
    store = _store(endpoint, "cleanroom-snapshots")
    listing = summarize(reader.listing())
    shards = split(listing.files, per_shard)
    prefix = run_prefix("ds", "r1")
    plan = RunPlan("ds", "r1", prefix, _config(), 1 << 20, timedelta(hours=2))
    source = presigner(S3Location(endpoint, "raw", ROOT_KEY, ROOT_SECRET))
    grant = write_plan(
        store,
        plan,
        reader.listing(),
        listing,
        shards,
        lambda item: source(item, timedelta(hours=2)),
        presigner(store.location),
        endpoint,
    )
    return store, prefix, grant, len(shards)


def test_shards_publish_the_same_files_byte_for_byte_as_the_in_process_ingest(
    stores: tuple[str, S3Reader],
) -> None:
    endpoint, reader = stores
    reference = _store(endpoint, "reference")
    in_process = run(
        reader, reader.items(), _config(), StoreSink(reference.location), workers=1, limits=Limits()
    )
    _, expected = publish(
        reference, dataset="ds", result=in_process, reader=reader, config=_config(), origin=ORIGIN, now=NOW
    )

    store, prefix, grant, shards = _plan(endpoint, reader, per_shard=3)
    assert shards >= 3
    env = {"CLEANROOM_INGEST_GRANT_URL": grant, "CLEANROOM_INGEST_DEID_KEY": base64.b64encode(KEY).decode()}
    for index in range(shards):
        assert "kept" in run_shard(env, index, workers=1)
    # A shard whose result is stored is not done again (a replaced Job's pod, a retried index).
    assert "nothing to do" in run_shard(env, 0, workers=1)
    joined = _publish_shards(store, prefix, shards, reader)
    manifest = store.manifest("ds", joined.digest)
    # The same bytes as the in-process ingest's manifest, but for the bucket its report is in.
    assert canonical_json(manifest) == canonical_json(expected).replace(
        b"s3://reference/", b"s3://cleanroom-snapshots/"
    )
    assert manifest["quarantine"]["files"] == expected["quarantine"]["files"] > 0
    for entry in manifest["files"]:
        assert store.get_object(entry["digest"]) == reference.get_object(entry["digest"])
    # Once published, the run's plan and uploads go; the snapshot's objects stay.
    assert store.remove_prefix(prefix) > shards
    assert not list(store.client.list_objects("cleanroom-snapshots", prefix=prefix, recursive=True))
    assert store.remove_prefix(prefix) == 0
    assert store.verify("ds", store.snapshots("ds")[0][0]) == []


def test_a_shard_refuses_to_run_with_another_key(stores: tuple[str, S3Reader]) -> None:
    endpoint, reader = stores
    _, _prefix, grant, _shards = _plan(endpoint, reader, per_shard=100)
    env = {
        "CLEANROOM_INGEST_GRANT_URL": grant,
        "CLEANROOM_INGEST_DEID_KEY": base64.b64encode(b"x" * 32).decode(),
    }
    with pytest.raises(RuntimeError, match="not the run's"):
        run_shard(env, 0, workers=1)


def _sink(store: SnapshotStore, endpoint: str, prefix: str) -> PostSink:
    fields = store.upload_policy(prefix + "out/", datetime.now(UTC) + timedelta(hours=1), 1 << 20)
    return PostSink(f"{endpoint}/cleanroom-snapshots", prefix + "out/", tuple(fields.items()))


def test_the_upload_policy_admits_the_runs_prefix_only(stores: tuple[str, S3Reader]) -> None:
    """A shard pod parsing hostile DICOM may be taken over: with its grant it cannot overwrite a stored
    object, a manifest or another Dataset's run."""
    endpoint, _reader = stores
    store = _store(endpoint, "cleanroom-snapshots")
    sink = _sink(store, endpoint, run_prefix("ds", "r1"))
    sink.upload(run_prefix("ds", "r1") + "out/objects/ok", b"fine")
    for key in (object_key("sha256:" + "a" * 64), "snapshots/ds/x.json", run_prefix("other", "r9") + "out/x"):
        with pytest.raises(OSError, match="403"):
            sink.upload(key, b"planted")
        with pytest.raises(S3Error):
            store.client.stat_object("cleanroom-snapshots", key)


def test_an_object_whose_bytes_are_not_its_name_is_not_promoted(stores: tuple[str, S3Reader]) -> None:
    endpoint, _reader = stores
    store = _store(endpoint, "cleanroom-snapshots")
    prefix = run_prefix("ds", "r1")
    claimed = content_digest(b"what the shard said")
    store.client.put_object(
        "cleanroom-snapshots", staged_key(prefix, claimed), io.BytesIO(b"other bytes"), 11
    )
    with pytest.raises(SnapshotError, match="do not hash"):
        store.promote(staged_key(prefix, claimed), claimed, 11)
    assert store.get_object(claimed) is None


def _tampered_run(endpoint: str, reader: S3Reader, tamper: Any) -> tuple[SnapshotStore, str, int]:
    """A run whose shards all ran, then one shard result rewritten by ``tamper`` (a shard pod taken over
    holds the upload policy of the run's ``out/`` prefix: it can write any result and any staged object)."""
    store, prefix, grant, shards = _plan(endpoint, reader, per_shard=3)
    env = {"CLEANROOM_INGEST_GRANT_URL": grant, "CLEANROOM_INGEST_DEID_KEY": base64.b64encode(KEY).decode()}
    for index in range(shards):
        run_shard(env, index, workers=1)
    result = store.document(result_key(prefix, 1))
    assert result is not None and result["files"]
    tamper(store, prefix, result)
    _sink(store, endpoint, prefix).upload(result_key(prefix, 1), json.dumps(result).encode())
    return store, prefix, shards


def _lie_about_size(store: SnapshotStore, prefix: str, result: dict[str, Any]) -> None:
    result["files"][0]["size"] += 1


def _stage_other_bytes(store: SnapshotStore, prefix: str, result: dict[str, Any]) -> None:
    planted = b"DICM planted by a shard pod"
    entry = FileEntry(
        **{**entry_from(result["files"][0]), "digest": content_digest(planted), "size": len(planted)}
    )
    result["files"][0] = entry_to_json(entry)
    _sink(store, store.location.endpoint, prefix).upload(staged_key(prefix, entry.digest), b"other bytes")


def _name_a_stored_object(store: SnapshotStore, prefix: str, result: dict[str, Any]) -> None:
    """An object of another snapshot, named with a size it does not have."""
    stored = store.put_object(b"an object of another snapshot")
    result["files"][0].update(digest=stored, size=999)


def entry_from(raw: dict[str, Any]) -> dict[str, Any]:
    from cleanroom.ingest.sharded import entry_from_json

    entry = entry_from_json(raw)
    return {name: getattr(entry, name) for name in entry.__dataclass_fields__}


@pytest.mark.parametrize("tamper", [_lie_about_size, _stage_other_bytes, _name_a_stored_object])
def test_a_tampered_shard_result_is_refused_and_nothing_is_published(
    stores: tuple[str, S3Reader], tamper: Any
) -> None:
    """Before, a shard result that lied about a size was published as it said; the snapshot then failed
    every verification (the materializer's, ``cleanroom snapshot verify``)."""
    endpoint, reader = stores
    store, prefix, shards = _tampered_run(endpoint, reader, tamper)
    with pytest.raises(SnapshotError, match="refusing"):
        _publish_shards(store, prefix, shards, reader)
    assert store.snapshots("ds") == []
    assert not list(store.client.list_objects("cleanroom-snapshots", prefix="snapshots/", recursive=True))


def test_a_published_manifest_changed_afterwards_fails_verification(stores: tuple[str, S3Reader]) -> None:
    endpoint, reader = stores
    store, prefix, grant, shards = _plan(endpoint, reader, per_shard=3)
    env = {"CLEANROOM_INGEST_GRANT_URL": grant, "CLEANROOM_INGEST_DEID_KEY": base64.b64encode(KEY).decode()}
    for index in range(shards):
        run_shard(env, index, workers=1)
    digest = _publish_shards(store, prefix, shards, reader).digest
    assert store.verify("ds", digest) == []
    manifest = store.manifest("ds", digest)
    manifest["files"][0]["size"] += 1
    data = canonical_json(manifest)
    store.client.put_object("cleanroom-snapshots", manifest_key("ds", digest), io.BytesIO(data), len(data))
    with pytest.raises(SnapshotError, match="changed after publishing"):
        store.verify("ds", digest)


def _put(store: SnapshotStore, key: str) -> None:
    store.client.put_object("cleanroom-snapshots", key, io.BytesIO(b"{}"), 2)


def _keys(store: SnapshotStore, prefix: str = "") -> list[str]:
    found = store.client.list_objects("cleanroom-snapshots", prefix=prefix, recursive=True)
    return sorted(str(item.object_name) for item in found)


def test_a_deleted_datasets_runs_leave_the_store_and_a_live_ones_stay(stores: tuple[str, S3Reader]) -> None:
    from cleanroom.handlers import _ingest_job

    endpoint, _reader = stores
    store = _store(endpoint, "cleanroom-snapshots")
    kept = ["ingest/ct/r1/plan/run.json", "ingest/ct/r1/out/shards/0.json", "snapshots/gone/abc.json"]
    for key in [*kept, "ingest/gone/r9/plan/run.json", "ingest/gone/r9/out/objects/ab", "ingest/ct-2/r1/x"]:
        _put(store, key)
    assert store.folders("ingest/") == ["ingest/ct-2/", "ingest/ct/", "ingest/gone/"]
    assert _ingest_job.remove_orphaned_runs(store, lambda: ["ct", "other"]) == [
        "ingest/ct-2/",
        "ingest/gone/",
    ]
    assert _keys(store) == sorted(kept)
    # Published (or adopted, or deleted): every run of the Dataset goes, the snapshots stay.
    assert _ingest_job.remove_runs(store, "ct") == 2
    assert _keys(store) == ["snapshots/gone/abc.json"]


def test_the_listing_streamed_from_the_store_is_its_sorted_listing(stores: tuple[str, S3Reader]) -> None:
    """Keys a directory walk would give out of S3's order ("a-b" sorts before "a/x") come in that order: the
    plan is split from the same listing, streamed, as from the sorted one."""
    endpoint, _ = stores
    client = Minio(endpoint.removeprefix("http://"), ROOT_KEY, ROOT_SECRET, secure=False)
    for key in ("walk/a/x.dcm", "walk/a-b.dcm", "walk/a.dcm", "walk/A.dcm", "walk/a/b/c.dcm", "walk/ä.dcm"):
        client.put_object("raw", key, io.BytesIO(b"x"), 1)
    reader = S3Reader(endpoint, "raw", "walk/", "", ROOT_KEY, ROOT_SECRET)
    assert list(reader.listing()) == reader.items() == sorted(reader.items())


def test_a_listing_that_changes_while_the_plan_is_written_leaves_no_run(stores: tuple[str, S3Reader]) -> None:
    """A file added between the summary and the shards' writing: ListingChanged, and no plan/run.json (so no
    Job runs over shards of two listings); the same with a file renamed (same count, other names)."""
    endpoint, reader = stores
    store = _store(endpoint, "cleanroom-snapshots")
    listing = summarize(reader.listing())
    prefix = run_prefix("ds", "changed")
    plan = RunPlan("ds", "changed", prefix, _config(), 1 << 20, timedelta(hours=2))
    for changed in (
        [*reader.items(), "site/zz-late.dcm"],
        [*reader.items()[:-1], "site/zz-renamed.dcm"],
    ):
        with pytest.raises(ListingChanged):
            write_plan(
                store,
                plan,
                iter(changed),
                listing,
                split(listing.files, 2),
                str,
                presigner(store.location),
                endpoint,
            )
        assert store.document(plan_key(prefix)) is None
    # The control: the listing as summarized is planned.
    write_plan(
        store,
        plan,
        reader.listing(),
        listing,
        split(listing.files, 2),
        str,
        presigner(store.location),
        endpoint,
    )
    assert store.document(plan_key(prefix))["files"] == listing.files


def test_the_plan_is_written_shard_by_shard_as_the_listing_is_read(stores: tuple[str, S3Reader]) -> None:
    """Planning holds one shard's files, not the listing: when the listing yields a shard's first file, every
    earlier shard's plan is already in the store."""
    endpoint, reader = stores
    store = _store(endpoint, "cleanroom-snapshots")
    items = reader.items()
    listing = summarize(items)
    shards = split(listing.files, 3)
    prefix = run_prefix("ds", "streamed")
    starts = {start: index for index, (start, _) in enumerate(shards)}

    def watched() -> Iterator[str]:
        for position, item in enumerate(items):
            if position in starts:
                written = [store.document(shard_plan_key(prefix, i)) is not None for i in range(len(shards))]
                assert written == [i < starts[position] for i in range(len(shards))], (position, written)
            yield item

    plan = RunPlan("ds", "streamed", prefix, _config(), 1 << 20, timedelta(hours=2))
    write_plan(store, plan, watched(), listing, shards, str, presigner(store.location), endpoint)
    assert len(shards) >= 3
