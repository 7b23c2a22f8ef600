"""A Dataset's ingest in shards against the real versitygw binary the chart runs (started here over a temporary
directory): the operator's plan, each shard as its pod runs it (``ingest-shard``: presigned reads, uploads
with the run's POST policy, no key), the join and the publication give the same snapshot files, byte for
byte, as the in-process ingest of the same source with the same key; a shard done is not done again; the
upload policy admits nothing outside the run's prefix, and an object whose bytes are not its name is refused."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from cleanroom.api import BurnedInAnnotationPolicy, DeidentificationMethod
from cleanroom.datasets.sharding import run_prefix, split
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest import Limits, StoreSink, publish, run
from cleanroom.ingest.shard_worker import PostSink, run_shard
from cleanroom.ingest.sharded import (
    RunPlan,
    join_results,
    promote_all,
    shard_results,
    staged_key,
    write_plan,
)
from cleanroom.snapshots import S3Location, SnapshotError, SnapshotStore, content_digest, object_key
from cleanroom.snapshots.store import presigner
from cleanroom.sources import S3Reader
from tests import phi_corpus
from tests.unit.test_outbox_reader import ROOT_KEY, ROOT_SECRET, server

__all__ = ["server"]

KEY = b"k" * 32
ORIGIN = {"uid": "u-1", "specHash": "sha256:00"}


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


def _plan(endpoint: str, reader: S3Reader, per_shard: int) -> tuple[SnapshotStore, str, str, int]:
    store = _store(endpoint, "cleanroom-snapshots")
    items = reader.items()
    shards = split(len(items), per_shard)
    prefix = run_prefix("ds", "r1")
    plan = RunPlan("ds", "r1", prefix, _config(), 1 << 20, timedelta(hours=2))
    source = presigner(S3Location(endpoint, "raw", ROOT_KEY, ROOT_SECRET))
    grant = write_plan(
        store,
        plan,
        items,
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
        reference, dataset="ds", result=in_process, reader=reader, config=_config(), origin=ORIGIN
    )

    store, prefix, grant, shards = _plan(endpoint, reader, per_shard=3)
    assert shards >= 3
    env = {"CLEANROOM_INGEST_GRANT_URL": grant, "CLEANROOM_INGEST_DEID_KEY": base64.b64encode(KEY).decode()}
    for index in range(shards):
        assert "kept" in run_shard(env, index, workers=1)
    # A shard whose result is stored is not done again (a replaced Job's pod, a retried index).
    assert "nothing to do" in run_shard(env, 0, workers=1)
    result = join_results(shard_results(store, prefix, shards), lambda i: AssertionError(i))
    assert promote_all(store, prefix, result.files) == len({f.digest for f in result.files})
    _, manifest = publish(store, dataset="ds", result=result, reader=reader, config=_config(), origin=ORIGIN)

    assert manifest["files"] == expected["files"]
    assert manifest["counts"] == expected["counts"]
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
    from datetime import UTC, datetime

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
        store.promote(staged_key(prefix, claimed), claimed)
    assert store.get_object(claimed) is None
