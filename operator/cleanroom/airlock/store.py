"""The airlock's objects in the snapshot store: an export's upload grant, its staging and quarantine areas,
its outbox, and the snapshot fingerprints the checks compare against.

Layout, under ``exports/<namespace>/<name>/<uid>/`` (the uid keeps a request and a later one of the same name
apart, and lets one delete remove everything of a request):
- ``grant.json``: the copy Job's upload grant: one presigned PUT URL per requested file and one for its
  manifest, nothing else (the Job holds no storage key);
- ``staging/<n>`` and ``staging/manifest.json``: what the Job uploaded, untrusted until verified;
- ``quarantine/sha256/<hex>`` and ``quarantine/manifest.json``: the files, content-addressed, once each
  matched the digest and size the Job reported; the checks read these;
- ``check/grant.json``: the check Job's read grant: one presigned GET URL per quarantined file and one for
  the snapshot's fingerprints, the Dataset's export policy, and one presigned PUT URL, for its result;
- ``check/result.json``: what the check Job found, untrusted until judged (`check_result.judge_result`);
- ``outbox/<path>``: the released files, which the hub presigns short-lived download links to.
``exports/fingerprints/<dataset>/<hex>.json`` holds a snapshot's fingerprints (built once: snapshots never
change).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from minio import Minio

from cleanroom._clients.s3 import S3Location, object_exists, read_object, s3_client
from cleanroom.airlock.checks import ExportedFile
from cleanroom.airlock.fingerprints import SnapshotFingerprints, fingerprint_snapshot, fingerprints_from_json
from cleanroom.snapshots import SnapshotStore, canonical_json, content_digest

UPLOAD_GRANT_KIND = "cleanroom.dev/export-upload-grant"
CHECK_GRANT_KIND = "cleanroom.dev/export-check-grant"
COPY_MANIFEST_KIND = "cleanroom.dev/export-copy"
DEFAULT_REGION = "us-east-1"
# A presigned URL for (key, lifetime).
Presign = Callable[[str, timedelta], str]


class ExportStoreError(RuntimeError):
    """The store refused or lacks what an export needs; the message says what."""


@dataclass(frozen=True)
class RequestKey:
    namespace: str
    name: str
    uid: str

    @property
    def prefix(self) -> str:
        return f"exports/{self.namespace}/{self.name}/{self.uid}/"

    @property
    def grant(self) -> str:
        return self.prefix + "grant.json"

    def staging(self, index: int) -> str:
        return f"{self.prefix}staging/{index}"

    @property
    def staging_manifest(self) -> str:
        return self.prefix + "staging/manifest.json"

    def quarantined(self, digest: str) -> str:
        return f"{self.prefix}quarantine/sha256/{digest.removeprefix('sha256:')}"

    @property
    def quarantine_manifest(self) -> str:
        return self.prefix + "quarantine/manifest.json"

    @property
    def check_grant(self) -> str:
        return self.prefix + "check/grant.json"

    @property
    def check_result(self) -> str:
        return self.prefix + "check/result.json"

    @property
    def outbox(self) -> str:
        return self.prefix + "outbox/"


def fingerprints_key(dataset: str, snapshot: str) -> str:
    return f"exports/fingerprints/{dataset}/{snapshot.removeprefix('sha256:')}.json"


def build_upload_grant(
    key: RequestKey,
    files: Sequence[str],
    max_bytes: int,
    presign_put: Presign,
    lifetime: timedelta,
    now: datetime,
) -> dict[str, Any]:
    """The copy Job's grant (pure, given ``presign_put``): where each file goes, and the most it may send."""
    return {
        "kind": UPLOAD_GRANT_KIND,
        "expiresAt": (now + lifetime).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "maxBytes": max_bytes,
        "files": [
            {"path": path, "url": presign_put(key.staging(i), lifetime)} for i, path in enumerate(files)
        ],
        "manifest": presign_put(key.staging_manifest, lifetime),
    }


@dataclass(frozen=True)
class CheckInputs:
    """What the checker judges, as the operator vouches for it: the quarantined files (path, digest, size),
    the snapshot and the digest of its fingerprints document, and the Dataset's export policy (its
    spec.export, as JSON)."""

    entries: Sequence[Mapping[str, Any]]
    dataset: str
    snapshot: str
    fingerprints_digest: str
    policy: Mapping[str, Any]


def build_check_grant(
    key: RequestKey,
    inputs: CheckInputs,
    presign_get: Presign,
    presign_put: Presign,
    lifetime: timedelta,
    now: datetime,
) -> dict[str, Any]:
    """The check Job's grant (pure, given the presigners): read each quarantined file and the fingerprints,
    write the one result object; the digests let the checker verify what it reads."""
    return {
        "kind": CHECK_GRANT_KIND,
        "request": key.uid,
        "snapshot": inputs.snapshot,
        "expiresAt": (now + lifetime).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "policy": dict(inputs.policy),
        "files": [
            {
                "path": str(e["path"]),
                "digest": str(e["digest"]),
                "size": int(e["size"]),
                "url": presign_get(key.quarantined(str(e["digest"])), lifetime),
            }
            for e in inputs.entries
        ],
        "fingerprints": {
            "digest": inputs.fingerprints_digest,
            "url": presign_get(fingerprints_key(inputs.dataset, inputs.snapshot), lifetime),
        },
        "result": presign_put(key.check_result, lifetime),
    }


def verify_copy(
    files: Sequence[str], manifest: dict[str, Any], staged: Callable[[int], bytes | None]
) -> list[dict[str, Any]]:
    """The entries (path, digest, size) of a copy whose every staged object matches what the Job reported,
    in the requested order; anything else raises ExportStoreError naming the file."""
    if manifest.get("kind") != COPY_MANIFEST_KIND:
        raise ExportStoreError("the copy's manifest is not one the copy Job writes")
    entries = list(manifest.get("files") or [])
    if [e.get("path") for e in entries] != list(files):
        raise ExportStoreError("the copy's manifest does not list the requested files in order")
    for index, entry in enumerate(entries):
        data = staged(index)
        if data is None:
            raise ExportStoreError(f"{entry['path']}: not uploaded")
        if len(data) != entry["size"] or content_digest(data) != entry["digest"]:
            raise ExportStoreError(
                f"{entry['path']}: the uploaded bytes do not match the digest the copy reported"
            )
    return [{"path": e["path"], "digest": e["digest"], "size": int(e["size"])} for e in entries]


class ExportStore:
    """The airlock's reads and writes; the operator holds it (the copy Job only its presigned URLs)."""

    def __init__(self, location: S3Location, job_endpoint: str = "", outbox_bucket: str = "") -> None:
        self.location = location
        self.bucket = location.bucket
        # Released files may go to a bucket of their own, so that the hub's download key reads them and
        # nothing else (never a snapshot).
        self.outbox_bucket = outbox_bucket or location.bucket
        self.client = s3_client(
            location.endpoint, location.access_key, location.secret_key, location.region, location.ca_bundle
        )
        # Presigned URLs are signed for the address their user reaches (the Job's, or a browser's).
        self._signer = self._signing_client(job_endpoint)

    def _signing_client(self, endpoint: str) -> Minio:
        location = self.location
        return s3_client(
            endpoint or location.endpoint,
            location.access_key,
            location.secret_key,
            location.region or DEFAULT_REGION,
            location.ca_bundle,
        )

    def _put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def _get(self, key: str) -> bytes | None:
        return read_object(self.client, self.bucket, key)

    def exists(self, key: str) -> bool:
        return object_exists(self.client, self.bucket, key)

    def issue_upload_grant(
        self, key: RequestKey, files: Sequence[str], max_bytes: int, lifetime: timedelta, now: datetime
    ) -> str:
        """Write the copy Job's grant and return the presigned GET URL of it (what the Job's Secret holds)."""
        document = build_upload_grant(
            key,
            files,
            max_bytes,
            lambda k, life: str(self._signer.presigned_put_object(self.bucket, k, expires=life)),
            lifetime,
            now,
        )
        self._put(key.grant, canonical_json(document), "application/json")
        return str(self._signer.presigned_get_object(self.bucket, key.grant, expires=lifetime))

    def promote(self, key: RequestKey, files: Sequence[str]) -> list[dict[str, Any]]:
        """Verify what the Job staged, move it into the quarantine area (content-addressed) with a manifest,
        and delete the staging area and the grant. Running it again after success changes nothing."""
        done = self._get(key.quarantine_manifest)
        if done is not None:
            entries: list[dict[str, Any]] = json.loads(done)["files"]
            return entries
        raw = self._get(key.staging_manifest)
        if raw is None:
            raise ExportStoreError("the copy Job wrote no manifest")
        entries = verify_copy(files, json.loads(raw), lambda i: self._get(key.staging(i)))
        for index, entry in enumerate(entries):
            data = self._get(key.staging(index)) or b""
            if content_digest(data) != entry["digest"]:
                raise ExportStoreError(f"{entry['path']}: changed while it was being moved")
            self._put(key.quarantined(entry["digest"]), data)
        manifest = {"kind": "cleanroom.dev/export-quarantine", "files": entries}
        self._put(key.quarantine_manifest, canonical_json(manifest), "application/json")
        for index in range(len(entries)):
            self.client.remove_object(self.bucket, key.staging(index))
        self.client.remove_object(self.bucket, key.staging_manifest)
        self.client.remove_object(self.bucket, key.grant)
        return entries

    def quarantined_files(self, key: RequestKey, entries: Sequence[dict[str, Any]]) -> list[ExportedFile]:
        """The quarantined files, each verified against its digest again (the checks judge these bytes)."""
        found = []
        for entry in entries:
            data = self._get(key.quarantined(entry["digest"]))
            if data is None or content_digest(data) != entry["digest"]:
                raise ExportStoreError(f"{entry['path']}: missing or changed in quarantine")
            found.append(ExportedFile(entry["path"], data))
        return found

    def release(self, key: RequestKey, entries: Sequence[dict[str, Any]]) -> str:
        """Copy the quarantined files to the outbox under their paths; return the outbox prefix."""
        if self.outbox_bucket != self.bucket and not self.client.bucket_exists(self.outbox_bucket):
            self.client.make_bucket(self.outbox_bucket)
        for file in self.quarantined_files(key, entries):
            self.client.put_object(
                self.outbox_bucket, key.outbox + file.path, io.BytesIO(file.data), len(file.data)
            )
        return key.outbox

    def purge(self, key: RequestKey) -> int:
        """Delete every object of the request (grant, staging, quarantine, outbox); the count deleted."""
        removed = 0
        for bucket in dict.fromkeys((self.bucket, self.outbox_bucket)):
            if bucket != self.bucket and not self.client.bucket_exists(bucket):
                continue
            for item in self.client.list_objects(bucket, prefix=key.prefix, recursive=True):
                self.client.remove_object(bucket, str(item.object_name))
                removed += 1
        return removed

    def fingerprints(self, snapshots: SnapshotStore, dataset: str, snapshot: str) -> SnapshotFingerprints:
        """The snapshot's fingerprints (`fingerprints_document`)."""
        return fingerprints_from_json(json.loads(self.fingerprints_document(snapshots, dataset, snapshot)))

    def fingerprints_document(self, snapshots: SnapshotStore, dataset: str, snapshot: str) -> bytes:
        """The snapshot's fingerprints as stored: read back when built before, else built from its objects
        (each verified against the manifest) and kept. Snapshots are the operator's own de-identified
        output, so building them here parses nothing a modeller wrote."""
        stored_key = fingerprints_key(dataset, snapshot)
        stored = self._get(stored_key)
        if stored is not None:
            return stored
        manifest = snapshots.manifest(dataset, snapshot)

        def objects() -> Any:
            for entry in manifest["files"]:
                data = snapshots.get_object(entry["digest"]) or b""
                if hashlib.sha256(data).hexdigest() != entry["digest"].removeprefix("sha256:"):
                    raise ExportStoreError(f"snapshot object {entry['path']} does not match its digest")
                yield entry["path"], entry["digest"], data

        document = canonical_json(fingerprint_snapshot(objects()).to_json())
        self._put(stored_key, document, "application/json")
        return document

    def issue_check_grant(
        self, key: RequestKey, inputs: CheckInputs, lifetime: timedelta, now: datetime
    ) -> str:
        """Write the check Job's grant and return the presigned GET URL of it (what the Job's Secret holds).
        A result left by an earlier checker of the request is deleted first: only this one's counts."""
        self.client.remove_object(self.bucket, key.check_result)
        document = build_check_grant(
            key,
            inputs,
            lambda k, life: str(self._signer.presigned_get_object(self.bucket, k, expires=life)),
            lambda k, life: str(self._signer.presigned_put_object(self.bucket, k, expires=life)),
            lifetime,
            now,
        )
        self._put(key.check_grant, canonical_json(document), "application/json")
        return str(self._signer.presigned_get_object(self.bucket, key.check_grant, expires=lifetime))

    def check_result(self, key: RequestKey, limit: int) -> bytes | None:
        """The check Job's result, at most ``limit`` + 1 bytes of it, or None while there is none."""
        return read_object(self.client, self.bucket, key.check_result, limit=limit)

    def end_check(self, key: RequestKey) -> None:
        """The checker's result is recorded: its grant goes (its URLs expire on their own)."""
        self.client.remove_object(self.bucket, key.check_grant)
