"""Audit segments on a real S3 server with Object Lock (versitygw, its own instance so that it can be
stopped): locked segments cannot be deleted, an overwrite is detected, and an outage during a burst of
writes loses nothing and duplicates nothing."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from cleanroom.audit import Actor, Anchors, AuditEvent, AuditLog, fingerprint, write_signing_key
from cleanroom.audit.segments import SegmentShipper, verify_store
from tests.integration.conftest import CACHE, VERSIONS, free_port

VERSITYGW = CACHE / "bin" / f"versitygw-{VERSIONS['VERSITYGW_VERSION']}" / "versitygw"
ACCESS, SECRET = "audit-test", "audit-test-secret"


class S3Server:
    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        (root / "data").mkdir(parents=True)
        (root / "versions").mkdir()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(VERSITYGW),
                "--access",
                ACCESS,
                "--secret",
                SECRET,
                "--port",
                f"127.0.0.1:{self.port}",
                "posix",
                "--versioning-dir",
                str(self.root / "versions"),
                str(self.root / "data"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.2)
        raise AssertionError("versitygw did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> Minio:
        return Minio(f"127.0.0.1:{self.port}", access_key=ACCESS, secret_key=SECRET, secure=False)


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "s3")
    server.start()
    yield server
    server.stop()


def log_in(directory: Path) -> AuditLog:
    key = directory.parent / f"{directory.name}.pem"
    return AuditLog(directory, write_signing_key(key), checkpoint_every=100)


def trusted(log: AuditLog) -> Anchors:
    return Anchors(frozenset({fingerprint(log.signing_key.public_key())}), "test")


def events(count: int, tag: str) -> list[AuditEvent]:
    return [
        AuditEvent(
            "data.file.opened", Actor("user", "alice@hospital.example"), resources={"path": f"{tag}/{i}"}
        )
        for i in range(count)
    ]


def test_shipped_segments_are_locked_and_an_overwrite_is_detected(s3: S3Server, tmp_path: Path) -> None:
    log = log_in(tmp_path / "trail")
    log.append(events(250, "a"))
    log.checkpoint()
    shipper = SegmentShipper(tmp_path / "trail", s3.client(), "cleanroom-audit")
    result = shipper.ship()
    assert (result.records, result.last_seq) == (250, 250)
    report = verify_store(s3.client(), "cleanroom-audit", trusted(log))
    assert report.problem is None and report.records == 250
    [segment] = [
        o for o in s3.client().list_objects("cleanroom-audit", prefix="segments/", include_version=True)
    ]
    with pytest.raises(S3Error, match="AccessDenied"):
        s3.client().remove_object("cleanroom-audit", segment.object_name, version_id=segment.version_id)
    # Someone with the store's keys writes a new version of the segment: the chain reader notices.
    import io

    forged = b'{"seq":1}\n'
    s3.client().put_object("cleanroom-audit", segment.object_name, io.BytesIO(forged), len(forged))
    tampered = verify_store(s3.client(), "cleanroom-audit", trusted(log))
    assert tampered.problem is not None and tampered.problem.kind == "changed" and tampered.problem.seq == 1


def test_an_s3_outage_during_a_burst_loses_nothing_and_duplicates_nothing(
    s3: S3Server, tmp_path: Path
) -> None:
    directory = tmp_path / "trail"
    log = log_in(directory)
    shipper = SegmentShipper(directory, s3.client(), "cleanroom-audit")
    log.append(events(100, "before"))
    assert shipper.ship().last_seq == 100
    s3.stop()

    # A burst from four writers while the store is down: every append is acknowledged by the local spool.
    def burst(tag: str) -> None:
        writer = AuditLog(directory, log.signing_key, checkpoint_every=100)
        for chunk in range(10):
            writer.append(events(25, f"{tag}-{chunk}"))

    threads = [threading.Thread(target=burst, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    with pytest.raises(Exception):  # noqa: B017  (the store is down: connection refused, retried, then raised)
        SegmentShipper(
            directory,
            Minio(f"127.0.0.1:{s3.port}", access_key=ACCESS, secret_key=SECRET, secure=False),
            "cleanroom-audit",
        ).ship()
    for thread in threads:
        thread.join()
    assert shipper.shipped_seq() == 100
    s3.start()
    log.checkpoint()
    result = shipper.ship()
    assert result.last_seq == 1100 and result.records == 1000
    assert shipper.ship().records == 0  # nothing left, nothing shipped twice
    report = verify_store(s3.client(), "cleanroom-audit", trusted(log))
    assert report.problem is None and report.records == 1100
