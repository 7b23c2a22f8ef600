"""`cleanroom snapshot ls|show|verify|materialize` against the real S3 server, and retention pruning that
keeps what a Workspace still pins."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cleanroom.snapshots import build_manifest, object_key
from tests.integration.conftest import s3_env
from tests.integration.test_dataset_ingest import s3_client, snapshot_store


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    s3 = s3_env()
    env = {
        **os.environ,
        "CLEANROOM_SNAPSHOT_ENDPOINT": s3["S3_ENDPOINT"],
        "CLEANROOM_SNAPSHOT_ACCESS_KEY": s3["S3_ACCESS_KEY"],
        "CLEANROOM_SNAPSHOT_SECRET_KEY": s3["S3_SECRET_KEY"],
    }
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "snapshot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def publish_one(dataset: str, created: str) -> tuple[str, dict[str, Any]]:
    store = snapshot_store()
    store.ensure_bucket()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    data = buffer.getvalue()
    digest = store.put_object(data)
    from cleanroom.snapshots import FileEntry

    entry = FileEntry(
        f"P/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm",
        digest,
        len(data),
        "P",
        "s",
        "se",
        "CT",
    )
    manifest = build_manifest(
        dataset=dataset,
        files=[entry],
        source={"kind": "directory", "location": "/x"},
        method="Anonymize",
        options=[],
        key_id="discarded",
        quarantine={"files": 0, "report": ""},
        created_at=created,
    )
    return store.publish(dataset, manifest), manifest


def test_ls_show_verify_and_materialize(tmp_path: Path, unique_name: str) -> None:
    digest, manifest = publish_one(unique_name, "2026-11-01T00:00:00Z")
    listing = cli("ls", unique_name)
    assert listing.returncode == 0 and digest.removeprefix("sha256:")[:12] in listing.stdout
    shown = cli("show", unique_name, digest[7:19])
    assert shown.returncode == 0 and json.loads(shown.stdout)["digest"] == digest
    assert cli("verify", unique_name).stdout.startswith("OK:")
    target = tmp_path / "data"
    materialized = cli("materialize", unique_name, digest, str(target))
    assert materialized.returncode == 0, materialized.stderr
    assert (target / manifest["files"][0]["path"]).exists()

    # A changed object is named by verify and stops materialize with a non-zero exit.
    victim = manifest["files"][0]
    s3_client().put_object("cleanroom-snapshots", object_key(victim["digest"]), io.BytesIO(b"evil"), 4)
    verified = cli("verify", unique_name, digest)
    assert verified.returncode == 1 and victim["path"] in verified.stdout
    refused = cli("materialize", unique_name, digest, str(tmp_path / "again"))
    assert refused.returncode == 1 and "MISMATCH" in refused.stderr
    assert not (tmp_path / "again" / victim["path"]).exists()


def test_unknown_snapshot_is_a_clear_error(unique_name: str) -> None:
    result = cli("show", unique_name)
    assert result.returncode == 2 and "no published snapshot" in result.stderr


def test_retention_keeps_the_newest_and_those_in_use(unique_name: str) -> None:
    digests = [publish_one(unique_name, f"2026-11-0{day}T00:00:00Z")[0] for day in range(1, 6)]
    oldest_in_use = digests[0]
    pruned = snapshot_store().prune(unique_name, keep=2, in_use={oldest_in_use})
    assert set(pruned) == set(digests[1:3])
    remaining = {d for d, _m in snapshot_store().snapshots(unique_name)}
    assert remaining == {digests[0], digests[3], digests[4]}
