"""Immutable, content-addressed, verifiable dataset snapshots in S3-compatible storage."""

from cleanroom._clients.s3 import S3Location
from cleanroom.snapshots.manifest import (
    PROFILE,
    FileEntry,
    Mismatch,
    build_manifest,
    canonical_json,
    content_digest,
    short_digest,
    summary,
)
from cleanroom.snapshots.store import (
    SnapshotError,
    SnapshotNotFound,
    SnapshotStore,
    manifest_key,
    object_key,
)

__all__ = [
    "PROFILE",
    "FileEntry",
    "Mismatch",
    "S3Location",
    "SnapshotError",
    "SnapshotNotFound",
    "SnapshotStore",
    "build_manifest",
    "canonical_json",
    "content_digest",
    "manifest_key",
    "object_key",
    "short_digest",
    "summary",
]
