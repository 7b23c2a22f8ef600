"""Read grants against the real S3 server: the materializer copies a snapshot with nothing but one presigned
URL, and the store itself refuses the grant once expired, for any other object, and for writing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from cleanroom.snapshots import SnapshotError, manifest_key, object_key
from cleanroom.snapshots.grant import GRANT_URL_VARIABLE, GrantRefused, issue_grant, materialize_from_grant
from cleanroom.snapshots.store import presigner
from tests.integration.test_dataset_ingest import s3_client, snapshot_store
from tests.integration.test_snapshot_cli_and_retention import publish_one


def grant(dataset: str, snapshot: str, seconds: float = 600) -> str:
    store = snapshot_store()
    issued = issue_grant(
        store,
        presigner(store.location),
        namespace="team",
        workspace="w",
        dataset=dataset,
        snapshot=snapshot,
        lifetime=timedelta(seconds=seconds),
    )
    return issued.url


def status_of(request: urllib.request.Request | str) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_materializer_copies_a_snapshot_with_only_a_grant(tmp_path: Path, unique_name: str) -> None:
    digest, manifest = publish_one(unique_name, "2026-11-01T00:00:00Z")
    url = grant(unique_name, digest)
    # The CLI the Job runs, with no store endpoint, bucket or keys in its environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEANROOM_SNAPSHOT", "S3_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "snapshot", "materialize-grant", str(tmp_path / "data")],
        env={**env, GRANT_URL_VARIABLE: url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    entry = manifest["files"][0]
    assert (tmp_path / "data" / entry["path"]).stat().st_size == entry["size"]
    assert json.loads((tmp_path / "data" / "MANIFEST.json").read_text())["digest"] == digest


def test_the_store_refuses_a_grant_past_its_life_for_other_objects_and_for_writes(
    tmp_path: Path, unique_name: str
) -> None:
    digest, manifest = publish_one(unique_name, "2026-11-01T00:00:00Z")
    other, _ = publish_one(f"{unique_name}-other", "2026-11-01T00:00:00Z")
    document = json.loads(urllib.request.urlopen(grant(unique_name, digest), timeout=30).read())
    object_url = document["objects"][manifest["files"][0]["digest"]]
    assert status_of(object_url) == 200
    # The signature covers the object's key: pointing the URL at another snapshot's manifest fails.
    elsewhere = document["manifest"].replace(
        manifest_key(unique_name, digest), manifest_key(f"{unique_name}-other", other)
    )
    assert status_of(elsewhere) == 403
    # ... and the method: the same URL cannot overwrite the object.
    assert status_of(urllib.request.Request(object_url, data=b"evil", method="PUT")) == 403
    stored = s3_client().get_object("cleanroom-snapshots", object_key(manifest["files"][0]["digest"])).read()
    assert stored != b"evil"

    short = grant(unique_name, digest, seconds=2)
    time.sleep(3)
    with pytest.raises(GrantRefused, match="expired"):
        materialize_from_grant(short, tmp_path / "late")


def test_a_manifest_that_does_not_hash_to_the_snapshot_is_refused(tmp_path: Path, unique_name: str) -> None:
    digest, manifest = publish_one(unique_name, "2026-11-01T00:00:00Z")
    url = grant(unique_name, digest)
    forged = json.dumps({**manifest, "files": []}).encode()
    s3_client().put_object(
        "cleanroom-snapshots", manifest_key(unique_name, digest), io.BytesIO(forged), len(forged)
    )
    with pytest.raises(SnapshotError, match="does not hash to it"):
        materialize_from_grant(url, tmp_path / "data")
    assert not (tmp_path / "data" / "MANIFEST.json").exists()
