"""Snapshot read grants: short-lived, read-only access to exactly one snapshot, with no key in it, and a size
that does not grow with the snapshot.

A workspace's materializer gets no storage credentials. The operator writes a grant document into the store
(`signing.build_sealed_grant`): the snapshot's digest, its Dataset, when it expires, a presigned GET URL of
the manifest, and the operator's seal over those claims; a few hundred bytes whether the snapshot holds ten
objects or ten million. The materializer gets one presigned URL, for that document, in its workspace's
Secret. It reads the manifest, checks that it hashes to the snapshot, and asks the grant signer
(`snapshots.signer`) for presigned GET URLs of the manifest's objects a batch at a time; the signer answers
only for digests that the sealed snapshot's manifest lists, only while the grant lives. Each URL names one
object and the GET method, so it can neither read another object nor write; after ``expiresAt`` the store
refuses the manifest's URL and the signer refuses the grant.

The materializer trusts nothing it is given beyond the URLs: the manifest must hash to the snapshot's
digest, and every object to the digest the manifest gives it.
"""

from __future__ import annotations

import http.client
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
from cleanroom.snapshots.signing import GRANT_KIND, GRANT_VERSION, MAX_BATCH, SIGN_PATH, build_sealed_grant
from cleanroom.snapshots.store import Presign, SnapshotError, SnapshotStore, manifest_key

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


def grant_key(namespace: str, workspace: str, now: datetime) -> str:
    return f"{GRANT_PREFIX}{namespace}/{workspace}/{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}.json"


def issue_grant(
    store: SnapshotStore,
    presign: Presign,
    *,
    seal_key: bytes,
    signer_url: str,
    namespace: str,
    workspace: str,
    dataset: str,
    snapshot: str,
    lifetime: timedelta,
    now: datetime | None = None,
    signer_ca: str = "",
) -> Grant:
    """Write a grant for ``snapshot`` into the store and return it. ``presign`` signs for the endpoint the
    materializer reaches, which may differ from the one the operator uses; ``signer_url`` is the grant
    signer's address as the materializer reaches it, and ``signer_ca`` (PEM) the one CA the materializer
    checks the signer's certificate against. Nothing here reads the manifest: the grant's size and cost are
    the same for every snapshot."""
    now = now or datetime.now(UTC)
    document = build_sealed_grant(
        namespace=namespace,
        workspace=workspace,
        dataset=dataset,
        snapshot=snapshot,
        manifest_url=presign(manifest_key(dataset, snapshot), lifetime),
        key=seal_key,
        lifetime=lifetime,
        now=now,
    )
    key = grant_key(namespace, workspace, now)
    # Where the signer is and whom to trust for it ride in the document, beside the seal: the materializer
    # trusts this document already (it names the snapshot every byte is checked against), and a grant issued
    # again after an upgrade reaches a materializer Job made before it.
    where = {"signer": signer_url, **({"signerCa": signer_ca} if signer_ca else {})}
    store.put_document(key, canonical_json({**document, **where}))
    return Grant(url=presign(key, lifetime), snapshot=snapshot, issued_at=now, expires_at=now + lifetime)


# -- the materializer's side -----------------------------------------------------------------------------------


class GrantRefused(SnapshotError):
    """The store refused a grant URL: expired, or not a grant for what was asked."""


def fetch(
    url: str | urllib.request.Request, what: str, opener: urllib.request.OpenerDirector, first: bool = False
) -> bytes:
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
                f"the grant was refused for {what} (HTTP 403): it has expired or was altered; the "
                "operator issues a new grant and the materializer's next try uses it"
            ) from error
        raise SnapshotError(f"fetching {what} failed: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise SnapshotError(f"the snapshot store cannot be reached for {what}: {error.reason}") from error
    except (OSError, http.client.HTTPException) as error:  # a connection dropped mid-answer, a TLS peer
        raise SnapshotError(f"fetching {what} failed: {type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class Materialized:
    snapshot: str
    files: int
    mismatches: tuple[str, ...]


def materialize_from_grant(url: str, directory: Path, ca_bundle: str = "") -> Materialized:
    """Copy the snapshot a grant covers into ``directory``, verifying the manifest and every object. A grant
    that names the signer's CA is sent to that signer over HTTPS only, checked against that CA alone."""
    # HTTPS with certificate verification on (``ca_bundle`` adds a CA); never turned off.
    opener = https_opener(ca_bundle)
    grant = json.loads(fetch(url, "the grant document", opener, first=True))
    if grant.get("kind") != GRANT_KIND or grant.get("version") != GRANT_VERSION:
        raise SnapshotError("the grant URL does not point at a snapshot grant of this version")
    snapshot = str(grant["snapshot"])
    manifest_bytes = fetch(grant["manifest"], f"the manifest of {snapshot}", opener)
    if content_digest(manifest_bytes) != snapshot:
        raise SnapshotError(f"the manifest fetched for {snapshot} does not hash to it: refusing the snapshot")
    manifest = json.loads(manifest_bytes)
    urls = ObjectURLs(grant, [entry["digest"] for entry in manifest["files"]], signer_opener(grant, opener))
    return write_verified(snapshot, manifest, lambda digest: fetch(urls[digest], digest, opener), directory)


def signer_opener(
    grant: dict[str, Any], opener: urllib.request.OpenerDirector
) -> urllib.request.OpenerDirector:
    """How to reach the grant's signer: with its CA alone when the grant names one (and then only over
    HTTPS: the grant would otherwise cross the network in clear), else as the store is reached."""
    ca = str(grant.get("signerCa") or "")
    if not ca:
        return opener
    if not str(grant.get("signer", "")).startswith("https://"):
        raise SnapshotError(
            f"the grant names a CA for its signer but a signer that is not HTTPS ({grant.get('signer')}): "
            "refusing to send the grant in clear"
        )
    return https_opener(only_ca=ca)


class ObjectURLs:
    """Presigned URLs of a snapshot's objects, asked of the grant signer a batch at a time as the copy
    reaches them (in the manifest's order): at most one batch is held, whatever the snapshot's size."""

    def __init__(self, grant: dict[str, Any], digests: list[str], opener: urllib.request.OpenerDirector):
        self._grant, self._opener = grant, opener
        self._order = list(dict.fromkeys(digests))
        self._position = {digest: at for at, digest in enumerate(self._order)}
        self._held: dict[str, str] = {}
        self._first = True  # the pod's first request to the signer: asked again while the network refuses it

    def __getitem__(self, digest: str) -> str:
        if digest not in self._held:
            at = self._position[digest]
            self._held = self._sign(self._order[at : at + MAX_BATCH])
        return self._held[digest]

    def _sign(self, digests: list[str]) -> dict[str, str]:
        body = json.dumps({"grant": self._grant, "digests": digests}).encode()
        request = urllib.request.Request(
            str(self._grant["signer"]).rstrip("/") + SIGN_PATH,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(
            fetch(
                request,
                f"URLs for {len(digests)} objects from the grant signer",
                self._opener,
                first=self._first,
            )
        )
        self._first = False
        urls: dict[str, str] = answer["urls"]
        return urls


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
