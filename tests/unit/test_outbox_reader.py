"""The hub's download key on the bundled S3 server (airlock.outbox_reader), against the real versitygw binary
the chart runs (started here over a temporary directory, as the S3 pod runs it): the key gets released files
and nothing else, not a quarantined file beside them, not a snapshot, no write, no listing."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from cleanroom.airlock.outbox_reader import BundledStore, keep_outbox_reader, outbox_read_policy
from tests.unit.test_chart_metrics import CACHE, VERSIONS

VERSITYGW = CACHE / f"bin/versitygw-{VERSIONS['VERSITYGW_VERSION']}/versitygw"
ROOT_KEY, ROOT_SECRET = "rootaccess", "root-secret-of-the-test"
OUTBOX, SNAPSHOTS = "cleanroom-exports", "cleanroom-snapshots"
RELEASED = "exports/team-a/xr-1/0b7e/outbox/results/metrics.csv"
QUARANTINED = "exports/team-a/xr-1/0b7e/quarantine/sha256/ab12"


def test_the_policy_grants_get_on_outbox_prefixes_to_the_reader_only() -> None:
    [statement] = outbox_read_policy("site-results", "hubkey")["Statement"]
    assert statement["Principal"] == {"AWS": ["hubkey"]}
    assert statement["Action"] == ["s3:GetObject"]
    assert statement["Resource"] == ["arn:aws:s3:::site-results/exports/*/outbox/*"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    if not VERSITYGW.exists():
        pytest.skip(f"versitygw is not built yet ({VERSITYGW}): hack/build-binaries.sh")
    for directory in ("buckets", ".versions", "iam"):
        (tmp_path / directory).mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(VERSITYGW), "--port", f"127.0.0.1:{port}", "--iam-dir", str(tmp_path / "iam"), "posix",
         "--versioning-dir", str(tmp_path / ".versions"), str(tmp_path / "buckets")],
        env={"ROOT_ACCESS_KEY": ROOT_KEY, "ROOT_SECRET_KEY": ROOT_SECRET},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline and process.poll() is None, "versitygw did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def reads(client: Minio, bucket: str, key: str) -> bytes | str:
    try:
        return bytes(client.get_object(bucket, key).read())
    except S3Error as error:
        return str(error.code)


def test_the_readers_key_gets_released_files_and_nothing_else(server: str) -> None:
    root = Minio(server, ROOT_KEY, ROOT_SECRET, secure=False, region="us-east-1")
    store = BundledStore(f"http://{server}", ROOT_KEY, ROOT_SECRET)
    keep_outbox_reader(store, OUTBOX, "hubreader", "first-secret-of-hub", once=True)
    root.make_bucket(SNAPSHOTS)
    for bucket, key in ((OUTBOX, RELEASED), (OUTBOX, QUARANTINED), (SNAPSHOTS, "objects/sha256/cd34")):
        root.put_object(bucket, key, io.BytesIO(b"fold,dice\n1,0.87\n"), 17)
    # Put in place again with another secret (a Secret replaced): the old one no longer signs anything.
    keep_outbox_reader(store, OUTBOX, "hubreader", "second-secret-of-hub", once=True)
    old = Minio(server, "hubreader", "first-secret-of-hub", secure=False, region="us-east-1")
    assert reads(old, OUTBOX, RELEASED) == "SignatureDoesNotMatch"

    hub = Minio(server, "hubreader", "second-secret-of-hub", secure=False, region="us-east-1")
    assert reads(hub, OUTBOX, RELEASED) == b"fold,dice\n1,0.87\n"
    assert reads(hub, OUTBOX, QUARANTINED) == "AccessDenied"
    assert reads(hub, SNAPSHOTS, "objects/sha256/cd34") == "AccessDenied"
    with pytest.raises(S3Error, match="AccessDenied"):
        hub.put_object(OUTBOX, RELEASED, io.BytesIO(b"forged"), 6)
    with pytest.raises(S3Error, match="AccessDenied"):
        list(hub.list_objects(OUTBOX, recursive=True))
    with pytest.raises(S3Error, match="AccessDenied"):
        list(hub.list_objects(SNAPSHOTS, recursive=True))
