"""The snapshot store: content-addressed objects and manifests in an S3-compatible bucket.

Layout: ``objects/sha256/<hex>`` (one object per distinct instance, shared across snapshots),
``snapshots/<dataset>/<hex>.json`` (manifests, written last so a reader never sees a partial snapshot) and
``quarantine/<dataset>/<run>.json`` (what was held back, and why). The S3 client is `_clients.s3`'s.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minio import Minio

from cleanroom._clients.s3 import EndpointError, S3Location, object_exists, read_object, s3_client
from cleanroom.snapshots.manifest import Mismatch, canonical_json, check_object, content_digest

# Objects younger than this are never collected: an ingest in flight has uploaded them but not yet
# published the manifest that references them.
GC_GRACE = timedelta(hours=1)


class SnapshotError(RuntimeError):
    """A snapshot that cannot be read, written or verified; the message says what to fix."""


class SnapshotNotFound(SnapshotError):
    """No manifest of that digest for that Dataset: never published, or pruned."""


def _client(location: S3Location, endpoint: str, region: str) -> Minio:
    """The store's client; an endpoint that is not a URL is the store's misconfiguration (a SnapshotError)."""
    try:
        return s3_client(endpoint, location.access_key, location.secret_key, region, location.ca_bundle)
    except EndpointError as error:
        raise SnapshotError(str(error)) from error


# Objects checked at once before a manifest is published (within the client's pool of 10 connections).
PUBLISH_CHECKS = 8
# S3 Signature V4 presigned URLs live at most seven days.
PRESIGNED_MAX_LIFETIME = timedelta(days=7)
DEFAULT_REGION = "us-east-1"


# A presigned GET URL for an object key, valid for the given time.
Presign = Callable[[str, timedelta], str]


def presigner(location: S3Location, endpoint: str = "") -> Presign:
    """Presigned GET URLs for objects of ``location``'s bucket, signed for ``endpoint`` (the address the
    reader uses; the location's own by default). Signing is local: no request is made."""
    client = _client(location, endpoint or location.endpoint, location.region or DEFAULT_REGION)
    return lambda key, lifetime: str(client.presigned_get_object(location.bucket, key, expires=lifetime))


def object_key(digest: str) -> str:
    return "objects/sha256/" + digest.removeprefix("sha256:")


def manifest_key(dataset: str, digest: str) -> str:
    return f"snapshots/{dataset}/{digest.removeprefix('sha256:')}.json"


class SnapshotStore:
    def __init__(self, location: S3Location) -> None:
        self.location = location
        self.bucket = location.bucket
        self.client = _client(location, location.endpoint, location.region)

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        from minio.sse import SseS3

        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            sse=SseS3() if self.location.server_side_encryption else None,
        )

    def _get(self, key: str) -> bytes | None:
        return read_object(self.client, self.bucket, key)

    def _exists(self, key: str) -> bool:
        return object_exists(self.client, self.bucket, key)

    def put_object(self, data: bytes) -> str:
        """Store one instance under its digest (a no-op when it is already there); return the digest."""
        digest = content_digest(data)
        key = object_key(digest)
        if not self._exists(key):
            self._put(key, data, "application/dicom")
        return digest

    def get_object(self, digest: str) -> bytes | None:
        return self._get(object_key(digest))

    def publish(self, dataset: str, manifest: dict[str, Any]) -> str:
        """Write the manifest (after every object it lists) and return the snapshot digest."""
        data = canonical_json(manifest)
        digest = content_digest(data)
        entries = manifest["files"]
        # One HEAD per object, a few at a time: one after the other they were a second per 400 files.
        with ThreadPoolExecutor(PUBLISH_CHECKS) as pool:
            stored = list(pool.map(lambda entry: self._exists(object_key(entry["digest"])), entries))
        for entry, found in zip(entries, stored, strict=True):
            if not found:
                raise SnapshotError(f"refusing to publish: {entry['path']} ({entry['digest']}) is not stored")
        self._put(manifest_key(dataset, digest), data, "application/json")
        return digest

    def put_document(self, key: str, data: bytes) -> None:
        self._put(key, data, "application/json")

    def put_report(self, key: str, report: dict[str, Any]) -> str:
        self._put(key, canonical_json(report), "application/json")
        return f"s3://{self.bucket}/{key}"

    def document(self, key: str) -> dict[str, Any] | None:
        """A JSON document of the store (an ingest run's plan or a shard's result), or None when absent."""
        data = self._get(key)
        if data is None:
            return None
        document: dict[str, Any] = json.loads(data)
        return document

    def upload_policy(self, prefix: str, expires: datetime, max_bytes: int) -> dict[str, str]:
        """The form fields of an S3 POST policy (SigV4) that lets its holder upload objects of at most
        ``max_bytes`` under ``prefix`` of this bucket, and nothing else, until ``expires``: a write grant
        scoped to one prefix, holding no key. The holder adds ``key`` and ``file``."""
        from minio.datatypes import PostPolicy

        policy = PostPolicy(self.bucket, expires)
        policy.add_starts_with_condition("key", prefix)
        policy.add_content_length_range_condition(0, max_bytes)
        return dict(self.client.presigned_post_policy(policy))

    def promote(self, staged_key: str, digest: str, size: int) -> bool:
        """Bring an object uploaded under ``staged_key`` into the content-addressed objects as ``digest`` of
        ``size`` bytes, after reading it through and checking both (an upload policy admits any bytes under
        its prefix, so nothing a shard pod wrote is trusted for its name or its size); streamed, never held
        whole. False when the object was already stored (its size checked); SnapshotError when the staged
        bytes are missing or do not match, or a stored object is not of that size."""
        from minio.commonconfig import CopySource

        stored = self._size(object_key(digest))
        if stored is not None:
            if stored != size:
                raise SnapshotError(
                    f"refusing {digest}: it is stored with {stored} bytes, not {size} as its shard said"
                )
            return False
        try:
            response = self.client.get_object(self.bucket, staged_key)
        except Exception as error:
            raise SnapshotError(f"the shard's object {staged_key} cannot be read: {error}") from error
        hasher, length = hashlib.sha256(), 0
        try:
            for chunk in response.stream(1 << 20):
                hasher.update(chunk)
                length += len(chunk)
        finally:
            response.close()
            response.release_conn()
        if "sha256:" + hasher.hexdigest() != digest or length != size:
            raise SnapshotError(
                f"refusing {staged_key}: its {length} bytes do not hash to {digest} of {size} bytes, as its shard said"
            )
        self.client.copy_object(self.bucket, object_key(digest), CopySource(self.bucket, staged_key))
        return True

    def _size(self, key: str) -> int | None:
        from minio.error import S3Error

        try:
            return int(self.client.stat_object(self.bucket, key).size or 0)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise

    def publish_file(self, dataset: str, path: str) -> str:
        """Write a manifest streamed to the file at ``path`` (``ingest.sharded_publish``: its writer brought
        every object it lists into the store first, each checked) and return the snapshot digest; the file is
        read twice in chunks, to hash it and to upload it, never held whole."""
        from minio.sse import SseS3

        hasher, length = hashlib.sha256(), 0
        with open(path, "rb") as manifest:
            while chunk := manifest.read(1 << 20):
                hasher.update(chunk)
                length += len(chunk)
        digest = "sha256:" + hasher.hexdigest()
        with open(path, "rb") as manifest:
            self.client.put_object(
                self.bucket,
                manifest_key(dataset, digest),
                manifest,
                length,
                content_type="application/json",
                sse=SseS3() if self.location.server_side_encryption else None,
            )
        return digest

    def remove_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (an ingest run's plan and uploads once it is published)."""
        from minio.deleteobjects import DeleteObject

        names = [
            DeleteObject(str(item.object_name))
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
        ]
        errors = list(self.client.remove_objects(self.bucket, iter(names)))
        if errors:
            raise SnapshotError(f"could not delete {len(errors)} objects under {prefix}: {errors[0]}")
        return len(names)

    def folders(self, prefix: str) -> list[str]:
        """The prefixes one level under ``prefix`` (``ingest/`` -> ``ingest/<dataset>/``)."""
        items = self.client.list_objects(self.bucket, prefix=prefix)
        return sorted(str(item.object_name) for item in items if item.is_dir)

    def has_snapshot(self, dataset: str, digest: str) -> bool:
        """Whether ``dataset`` has a published snapshot ``digest`` (one HEAD; nothing is read or checked)."""
        return self._exists(manifest_key(dataset, digest))

    def _manifest_bytes(self, dataset: str, digest: str) -> bytes:
        data = self._get(manifest_key(dataset, digest))
        if data is None:
            raise SnapshotNotFound(f"no snapshot {digest} for dataset {dataset!r}")
        if content_digest(data) != digest:
            raise SnapshotError(
                f"manifest of {digest} does not match its digest: it was changed after publishing"
            )
        return data

    def manifest(self, dataset: str, digest: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self._manifest_bytes(dataset, digest))
        return document

    def object_digests(self, dataset: str, digest: str) -> list[str]:
        """The object digests a snapshot's manifest lists, in its order, its files' entries never held: a
        manifest of a million objects parsed whole peaks at 750 MB, this at 440 MB (its text and the digests)."""
        document = json.loads(self._manifest_bytes(dataset, digest), object_hook=_entry_digest)
        return [str(entry) for entry in document["files"]]

    def snapshots(self, dataset: str) -> list[tuple[str, dict[str, Any]]]:
        """(digest, manifest) of every published snapshot of ``dataset``, newest first."""
        found = []
        for item in self.client.list_objects(self.bucket, prefix=f"snapshots/{dataset}/", recursive=True):
            name = str(item.object_name).rsplit("/", 1)[-1].removesuffix(".json")
            digest = "sha256:" + name
            found.append((digest, self.manifest(dataset, digest)))
        return sorted(found, key=lambda pair: pair[1]["createdAt"], reverse=True)

    def datasets(self) -> list[str]:
        prefixes = self.client.list_objects(self.bucket, prefix="snapshots/")
        return sorted(str(p.object_name).split("/")[1] for p in prefixes if p.is_dir)

    def verify(self, dataset: str, digest: str) -> list[Mismatch]:
        """Recompute every object's digest against the manifest; each mismatch is named."""
        manifest = self.manifest(dataset, digest)
        problems = []
        for entry in manifest["files"]:
            found = check_object(
                entry["path"], entry["digest"], entry["size"], self.get_object(entry["digest"])
            )
            if found:
                problems.append(found)
        return problems

    def prune(self, dataset: str, keep: int, in_use: Iterable[str] = ()) -> list[str]:
        """Delete manifests beyond the ``keep`` newest, except those in use; return the pruned digests."""
        used = set(in_use)
        pruned = []
        for digest, _manifest in self.snapshots(dataset)[keep:]:
            if digest in used:
                continue
            self.client.remove_object(self.bucket, manifest_key(dataset, digest))
            pruned.append(digest)
        return pruned

    def collect_garbage(self, now: datetime | None = None) -> int:
        """Delete objects that no manifest references and that are older than the grace period."""
        now = now or datetime.now(UTC)
        referenced = {
            entry["digest"]
            for name in self.datasets()
            for _d, m in self.snapshots(name)
            for entry in m["files"]
        }
        removed = 0
        for item in self._objects():
            digest = "sha256:" + str(item.object_name).rsplit("/", 1)[-1]
            if digest not in referenced and item.last_modified and now - item.last_modified > GC_GRACE:
                self.client.remove_object(self.bucket, str(item.object_name))
                removed += 1
        return removed

    def collect_expired_grants(self, now: datetime | None = None) -> int:
        """Delete grant documents older than the longest a presigned URL may live (they are useless then)."""
        now = now or datetime.now(UTC)
        removed = 0
        for item in self.client.list_objects(self.bucket, prefix="grants/", recursive=True):
            if item.last_modified and now - item.last_modified > PRESIGNED_MAX_LIFETIME:
                self.client.remove_object(self.bucket, str(item.object_name))
                removed += 1
        return removed

    def _objects(self) -> Iterator[Any]:
        yield from self.client.list_objects(self.bucket, prefix="objects/sha256/", recursive=True)


def _entry_digest(decoded: dict[str, Any]) -> Any:
    """A manifest's file entry (path, digest, size, ...) as its digest alone; other objects as they are."""
    return decoded["digest"] if "path" in decoded and "digest" in decoded else decoded
