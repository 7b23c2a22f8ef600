"""Snapshot read grants: short-lived, read-only access to exactly one snapshot, with no key in it.

A workspace's materializer gets no storage credentials. The operator writes a grant document into the store:
presigned GET URLs (S3 Signature V4 query authentication) for the snapshot's manifest and for each object it
lists, all expiring at the same moment. The materializer gets one presigned URL, for that document, in its
workspace's Secret. Each URL names one object and the GET method, so it can neither read another object nor
write; after ``expiresAt`` the store refuses them all. Presigning is computed locally with the operator's
key, so it works the same on every S3-compatible store.

The materializer trusts nothing in the grant beyond the URLs: the manifest must hash to the snapshot's
digest, and every object to the digest the manifest gives it.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cleanroom._clients.first_contact import read_first
from cleanroom._clients.tls import https_opener
from cleanroom.api.contract import GRANT_URL_VARIABLE as GRANT_URL_VARIABLE
from cleanroom.snapshots.manifest import canonical_json, check_object, content_digest
from cleanroom.snapshots.store import Presign, SnapshotError, SnapshotStore, manifest_key, object_key

GRANT_KIND = "cleanroom.dev/snapshot-grant"
GRANT_PREFIX = "grants/"


@dataclass(frozen=True)
class Grant:
    """A grant as the operator keeps it: the URL of its document, what it covers and when it expires."""

    url: str
    snapshot: str
    issued_at: datetime
    expires_at: datetime

    def renewal_due(self, now: datetime) -> bool:
        """Past half its lifetime: a materializer that starts now might outlive it."""
        return now >= self.issued_at + (self.expires_at - self.issued_at) / 2


def build_grant(
    *,
    dataset: str,
    snapshot: str,
    manifest: dict[str, Any],
    presign: Presign,
    lifetime: timedelta,
    now: datetime,
) -> dict[str, Any]:
    """The grant document for one snapshot (pure, given ``presign``)."""
    return {
        "kind": GRANT_KIND,
        "dataset": dataset,
        "snapshot": snapshot,
        "issuedAt": _timestamp(now),
        "expiresAt": _timestamp(now + lifetime),
        "manifest": presign(manifest_key(dataset, snapshot), lifetime),
        "objects": {
            entry["digest"]: presign(object_key(entry["digest"]), lifetime) for entry in manifest["files"]
        },
    }


def grant_key(namespace: str, workspace: str, now: datetime) -> str:
    return f"{GRANT_PREFIX}{namespace}/{workspace}/{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}.json"


def issue_grant(
    store: SnapshotStore,
    presign: Presign,
    *,
    namespace: str,
    workspace: str,
    dataset: str,
    snapshot: str,
    lifetime: timedelta,
    now: datetime | None = None,
    manifest: dict[str, Any] | None = None,
) -> Grant:
    """Write a grant for ``snapshot`` into the store and return it. ``presign`` signs for the endpoint the
    materializer reaches, which may differ from the one the operator uses. ``manifest``, when the caller
    has it already (snapshots are immutable), saves reading it again."""
    now = now or datetime.now(UTC)
    document = build_grant(
        dataset=dataset,
        snapshot=snapshot,
        manifest=manifest if manifest is not None else store.manifest(dataset, snapshot),
        presign=presign,
        lifetime=lifetime,
        now=now,
    )
    key = grant_key(namespace, workspace, now)
    store.put_document(key, canonical_json(document))
    return Grant(url=presign(key, lifetime), snapshot=snapshot, issued_at=now, expires_at=now + lifetime)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the materializer's side -----------------------------------------------------------------------------------


class GrantRefused(SnapshotError):
    """The store refused a grant URL: expired, or not a grant for what was asked."""


def fetch(url: str, what: str, opener: urllib.request.OpenerDirector, first: bool = False) -> bytes:
    """``what`` at ``url``; ``first``: the pod's first request, asked again while its network policy is
    being programmed (`_clients.first_contact`)."""
    try:
        if first:
            return read_first(opener, url)
        with opener.open(url, timeout=60) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 403:
            raise GrantRefused(
                f"the store refused the grant for {what} (HTTP 403): it has expired or was altered; the "
                "operator issues a new grant and the materializer's next try uses it"
            ) from error
        raise SnapshotError(f"fetching {what} failed: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise SnapshotError(f"the snapshot store cannot be reached for {what}: {error.reason}") from error


@dataclass(frozen=True)
class Materialized:
    snapshot: str
    files: int
    mismatches: tuple[str, ...]


def materialize_from_grant(url: str, directory: Path, ca_bundle: str = "") -> Materialized:
    """Copy the snapshot a grant covers into ``directory``, verifying the manifest and every object."""
    # HTTPS with certificate verification on (``ca_bundle`` adds a CA); never turned off.
    opener = https_opener(ca_bundle)
    grant = json.loads(fetch(url, "the grant document", opener, first=True))
    if grant.get("kind") != GRANT_KIND:
        raise SnapshotError("the grant URL does not point at a snapshot grant")
    snapshot = str(grant["snapshot"])
    manifest_bytes = fetch(grant["manifest"], f"the manifest of {snapshot}", opener)
    if content_digest(manifest_bytes) != snapshot:
        raise SnapshotError(f"the manifest fetched for {snapshot} does not hash to it: refusing the snapshot")
    manifest = json.loads(manifest_bytes)
    urls: dict[str, str] = grant["objects"]
    return write_verified(
        snapshot,
        manifest,
        lambda digest: fetch(urls[digest], digest, opener) if digest in urls else None,
        directory,
    )


def write_verified(
    snapshot: str, manifest: dict[str, Any], get: Callable[[str], bytes | None], directory: Path
) -> Materialized:
    """Write each of the manifest's files that matches its digest and size; report the others by path. The
    manifest is written last, as MANIFEST.json, and only when every file matched: its presence says the
    copy is complete and verified."""
    directory.mkdir(parents=True, exist_ok=True)
    mismatches = []
    for entry in manifest["files"]:
        data = get(entry["digest"])
        problem = check_object(entry["path"], entry["digest"], entry["size"], data)
        if problem is not None:
            mismatches.append(f"{problem.path}: {problem.problem}")
            continue
        target = directory / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data or b"")
    if not mismatches:
        (directory / "MANIFEST.json").write_text(json.dumps({"digest": snapshot, **manifest}, indent=1))
    return Materialized(snapshot, len(manifest["files"]), tuple(mismatches))
