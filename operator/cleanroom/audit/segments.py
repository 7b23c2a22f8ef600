"""Audit segments in S3 under Object Lock: the local spool's records shipped in sealed, contiguous ranges.

The spool (`AuditLog`) acknowledges an event once it is fsync'd locally, so an S3 outage loses nothing: the
shipper resumes from the last shipped sequence number, recorded durably in the spool directory, when the
store is back. Each segment `segments/<first>-<last>.jsonl` holds the records exactly as the spool wrote them
(so every hash verifies), and is written with a COMPLIANCE retention: for that period nobody, the bucket's
owner included, can delete it or shorten its retention. A later upload under the same key can only add a
newer *version*; `verify_store` reads every version and reports a segment whose versions differ.

Which servers enforce Object Lock: AWS S3, MinIO, Ceph RGW, versitygw (tested here), Scaleway, Wasabi,
Backblaze B2 (docs/audit.md has the table)."""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.retention import Retention

from cleanroom._clients.s3 import read_object, s3_client
from cleanroom.audit.chain import Problem
from cleanroom.audit.spool import CHECKPOINTS, KEYS, RECORDS, write_durably
from cleanroom.audit.trust import Anchors
from cleanroom.audit.verification import verify_trail

SHIPPED = "shipped.json"
SEGMENT_RECORDS = 10_000


@dataclass(frozen=True)
class ShipResult:
    segments: int
    records: int
    last_seq: int


def segment_key(prefix: str, first: int, last: int) -> str:
    return f"{prefix}segments/{first:012d}-{last:012d}.jsonl"


class SegmentShipper:
    def __init__(
        self, directory: str | Path, client: Minio, bucket: str, prefix: str = "", retention_days: int = 3650
    ) -> None:
        self.directory = Path(directory)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.retention = timedelta(days=retention_days)

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            # Object Lock can only be switched on when a bucket is created.
            self.client.make_bucket(self.bucket, object_lock=True)

    def shipped_seq(self) -> int:
        path = self.directory / SHIPPED
        return int(json.loads(path.read_text())["seq"]) if path.exists() else 0

    def _unshipped(self, after: int) -> Iterator[tuple[int, bytes]]:
        path = self.directory / RECORDS
        if not path.exists():
            return
        with path.open("rb") as records:
            for line in records:
                if not line.endswith(b"\n"):
                    break  # a record still being written; it ships next time
                seq = int(json.loads(line)["seq"])
                if seq > after:
                    yield seq, line

    def ship(self) -> ShipResult:
        """Upload every complete record not yet shipped, in segments of at most SEGMENT_RECORDS; raises on a
        store error after recording what did ship, so the next call resumes exactly there."""
        self.ensure_bucket()
        after = self.shipped_seq()
        batch: list[tuple[int, bytes]] = []
        segments = records = 0
        for item in self._unshipped(after):
            batch.append(item)
            if len(batch) == SEGMENT_RECORDS:
                self._put_segment(batch)
                segments, records = segments + 1, records + len(batch)
                batch = []
        if batch:
            self._put_segment(batch)
            segments, records = segments + 1, records + len(batch)
        if segments:
            # Checkpoints and keys grow: each upload stays as a locked version; verification reads the latest.
            for name in (CHECKPOINTS, KEYS):
                if (self.directory / name).exists():
                    self._put_locked(f"{self.prefix}{name}", (self.directory / name).read_bytes())
        return ShipResult(segments, records, self.shipped_seq())

    def _put_segment(self, batch: list[tuple[int, bytes]]) -> None:
        first, last = batch[0][0], batch[-1][0]
        self._put_locked(segment_key(self.prefix, first, last), b"".join(line for _, line in batch))
        write_durably(self.directory / SHIPPED, json.dumps({"seq": last}).encode())

    def _put_locked(self, key: str, data: bytes) -> None:
        until = datetime.now(UTC).replace(microsecond=0) + self.retention
        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            retention=Retention(COMPLIANCE, until),
            content_type="application/x-ndjson",
        )


@dataclass(frozen=True)
class StoreReport:
    records: int
    segments: int
    problem: Problem | None


def _versions(client: Minio, bucket: str, key: str) -> list[bytes]:
    bodies = []
    for item in client.list_objects(bucket, prefix=key, include_version=True):
        if item.object_name != key or item.is_delete_marker:
            continue
        body = read_object(client, bucket, key, item.version_id)
        if body is not None:
            bodies.append(body)
    return bodies


def verify_store(client: Minio, bucket: str, anchors: Anchors, prefix: str = "") -> StoreReport:
    """Read every segment (every version of it) from the store and verify the chain and its signed
    checkpoints under the verifier's trusted keys, as `cleanroom audit verify` does for a local copy. Every
    stored version of the checkpoints must extend the one before: checkpoints are only ever appended."""
    keys = sorted(
        item.object_name
        for item in client.list_objects(bucket, prefix=f"{prefix}segments/", recursive=True)
        if item.object_name
    )
    lines: list[bytes] = []
    for key in keys:
        versions = _versions(client, bucket, key)
        if not versions:
            continue
        if any(body != versions[-1] for body in versions):
            first = int(Path(key).name.split("-")[0])
            return StoreReport(
                len(lines),
                len(keys),
                Problem(first, "changed", f"{key} has versions with different content: an overwrite"),
            )
        lines.extend(line for line in versions[-1].splitlines(keepends=True) if line.strip())
    # Whatever order the store lists versions in, append-only means each is a prefix of every longer one.
    versions = sorted(_versions(client, bucket, f"{prefix}{CHECKPOINTS}"), key=len)
    for older, newer in itertools.pairwise(versions):
        if not newer.startswith(older):
            return StoreReport(
                len(lines),
                len(keys),
                Problem(
                    0,
                    "checkpoint-removed",
                    "a stored version of the checkpoints drops or changes ones stored before it",
                ),
            )
    checkpoints = (versions[-1] if versions else b"").decode().split()
    public = json.loads(read_object(client, bucket, f"{prefix}{KEYS}") or b"{}")
    report = verify_trail(lines, checkpoints, public, anchors)
    return StoreReport(len(lines), len(keys), report.problem)


def shipper_from_env(directory: str | Path, env: dict[str, str] | None = None) -> SegmentShipper | None:
    """The shipper for CLEANROOM_AUDIT_S3_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY,REGION,PREFIX,RETENTION_DAYS};
    None when no endpoint is set (segments stay local)."""
    env = dict(os.environ) if env is None else env
    if not env.get("CLEANROOM_AUDIT_S3_ENDPOINT"):
        return None
    client = s3_client(
        env["CLEANROOM_AUDIT_S3_ENDPOINT"],
        env.get("CLEANROOM_AUDIT_S3_ACCESS_KEY", ""),
        env.get("CLEANROOM_AUDIT_S3_SECRET_KEY", ""),
        env.get("CLEANROOM_AUDIT_S3_REGION", ""),
    )
    return SegmentShipper(
        directory,
        client,
        env.get("CLEANROOM_AUDIT_S3_BUCKET", "cleanroom-audit"),
        env.get("CLEANROOM_AUDIT_S3_PREFIX", ""),
        int(env.get("CLEANROOM_AUDIT_S3_RETENTION_DAYS", "3650")),
    )
