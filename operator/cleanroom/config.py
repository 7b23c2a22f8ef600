"""Operator and CLI configuration from the environment (the Helm chart sets these on the Deployment)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from cleanroom.snapshots import S3Location, SnapshotError

SNAPSHOT_VARIABLES = (
    "CLEANROOM_SNAPSHOT_ENDPOINT",
    "CLEANROOM_SNAPSHOT_ACCESS_KEY",
    "CLEANROOM_SNAPSHOT_SECRET_KEY",
)


def snapshot_location(env: Mapping[str, str] | None = None) -> S3Location:
    """Where snapshots are published: CLEANROOM_SNAPSHOT_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY,REGION,CA_BUNDLE,SSE}."""
    env = os.environ if env is None else env
    missing = [name for name in SNAPSHOT_VARIABLES if not env.get(name)]
    if missing:
        raise SnapshotError(f"the snapshot store is not configured: set {', '.join(missing)}")
    return S3Location(
        endpoint=env["CLEANROOM_SNAPSHOT_ENDPOINT"],
        bucket=env.get("CLEANROOM_SNAPSHOT_BUCKET", "cleanroom-snapshots"),
        access_key=env["CLEANROOM_SNAPSHOT_ACCESS_KEY"],
        secret_key=env["CLEANROOM_SNAPSHOT_SECRET_KEY"],
        region=env.get("CLEANROOM_SNAPSHOT_REGION", ""),
        ca_bundle=env.get("CLEANROOM_SNAPSHOT_CA_BUNDLE", ""),
        server_side_encryption=env.get("CLEANROOM_SNAPSHOT_SSE", "") == "true",
    )


def ingest_workers(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get("CLEANROOM_INGEST_WORKERS", "0")) or (os.cpu_count() or 1)


def ingest_max_file_bytes(env: Mapping[str, str] | None = None) -> int:
    """What one ingested file may have, as read and (deflated) once inflated: CLEANROOM_INGEST_MAX_FILE_BYTES,
    1 GiB by default. Each worker holds one file at a time, a few times this size at most."""
    env = os.environ if env is None else env
    raw = env.get("CLEANROOM_INGEST_MAX_FILE_BYTES", "")
    try:
        value = int(raw) if raw else 1 << 30
    except ValueError:
        raise ValueError(f"CLEANROOM_INGEST_MAX_FILE_BYTES must be a number of bytes, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"CLEANROOM_INGEST_MAX_FILE_BYTES must be positive, not {raw!r}")
    return value
