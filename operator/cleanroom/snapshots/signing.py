"""What a snapshot read grant allows, decided without I/O: the grant's seal, and which object URLs it earns.

A grant is a small document whose size does not depend on the snapshot's: the snapshot's digest (which pins
the manifest, and through it every object's digest), the Dataset, the moment it expires, a presigned URL of
the manifest, and a seal: HMAC-SHA256 over those claims with a key only the operator and its signer hold.
Whoever holds the grant may ask the signer for presigned GET URLs, a batch at a time, and gets them only
for objects whose digest the sealed snapshot's manifest lists, only while the grant lives, and never for
longer than it lives. The signer holds the only read key; nothing it signs can list, write or delete.

Objects are content-addressed and shared by every snapshot (of any Dataset) that holds the same bytes, so a
scope by key prefix (``objects/``) would admit every Dataset's objects to anyone who learns a digest: the
scope here is the manifest's set of digests, checked per object. An object shared with another snapshot is
readable through this grant because it is, byte for byte, an object of this snapshot.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanroom.snapshots.manifest import canonical_json

GRANT_KIND = "cleanroom.dev/snapshot-grant"
GRANT_VERSION = 2
# Where the grant signer answers (snapshots.signer).
SIGN_PATH = "/v1/sign"
# The claims the seal covers; anything else in a grant (the manifest's URL, itself signed by the store) is
# not trusted by the signer.
SEALED = ("kind", "version", "dataset", "snapshot", "namespace", "workspace", "issuedAt", "expiresAt")
# Object URLs live this long at most, and never past the grant: the materializer asks for a batch just
# before it reads it, and a GET the store has begun is not cut off when its URL expires.
OBJECT_URL_LIFETIME = timedelta(minutes=15)
# Digests one request may name: a batch is signed in well under a second, and its answer stays small.
MAX_BATCH = 500
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SEAL_CONTEXT = b"cleanroom snapshot read grant seal v2"


def seal_key(reader_secret: str) -> bytes:
    """The seal key, derived from the read key's secret (both sides hold it already; a rotated read key
    voids every grant sealed with the old one). Domain-separated: the key signs nothing else."""
    return hmac.new(reader_secret.encode(), _SEAL_CONTEXT, hashlib.sha256).digest()


def seal(claims: Mapping[str, Any], key: bytes) -> str:
    sealed = {name: claims.get(name) for name in SEALED}
    return hmac.new(key, canonical_json(sealed), hashlib.sha256).hexdigest()


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_sealed_grant(
    *,
    namespace: str,
    workspace: str,
    dataset: str,
    snapshot: str,
    manifest_url: str,
    key: bytes,
    lifetime: timedelta,
    now: datetime,
) -> dict[str, Any]:
    """The grant for one snapshot: constant size, whatever the snapshot holds."""
    claims: dict[str, Any] = {
        "kind": GRANT_KIND,
        "version": GRANT_VERSION,
        "dataset": dataset,
        "snapshot": snapshot,
        "namespace": namespace,
        "workspace": workspace,
        "issuedAt": timestamp(now),
        "expiresAt": timestamp(now + lifetime),
    }
    return {**claims, "manifest": manifest_url, "seal": seal(claims, key)}


class DigestIndex:
    """The set of a manifest's object digests as one sorted run of 32-byte values: 48 MB for 1.5 million
    objects, where a set of strings takes four times that."""

    def __init__(self, digests: Iterable[str]) -> None:
        # Sorted as the strings they arrive as (the same order as their bytes: one prefix, lower-case hex), so
        # that no second object per digest is made on the way.
        blob, last = bytearray(), ""
        for digest in sorted(digests):
            if digest != last:
                blob += bytes.fromhex(digest.removeprefix("sha256:"))
                last = digest
        self._blob = bytes(blob)
        self._count = len(blob) // 32

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            return False
        wanted = bytes.fromhex(digest[7:])
        at = bisect.bisect_left(_Run(self._blob), wanted, 0, self._count)
        return at < self._count and self._blob[at * 32 : at * 32 + 32] == wanted


class _Run(Sequence[bytes]):
    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    def __len__(self) -> int:
        return len(self._blob) // 32

    def __getitem__(self, index: Any) -> Any:
        return self._blob[index * 32 : index * 32 + 32]


@dataclass(frozen=True)
class Refusal:
    """Why a signing request is refused: ``status`` is the HTTP status the signer answers with."""

    status: int
    reason: str


@dataclass(frozen=True)
class Signing:
    """What to sign: these digests' objects, for this long."""

    dataset: str
    snapshot: str
    digests: tuple[str, ...]
    lifetime: timedelta


def check_grant(grant: Any, key: bytes, now: datetime) -> Refusal | None:
    """Whether ``grant`` is one the operator sealed and still alive (None) or why not."""
    if (
        not isinstance(grant, dict)
        or grant.get("kind") != GRANT_KIND
        or grant.get("version") != GRANT_VERSION
    ):
        return Refusal(400, "not a snapshot read grant")
    if not hmac.compare_digest(str(grant.get("seal", "")), seal(grant, key)):
        return Refusal(403, "the grant's seal does not match its claims: altered, or not the operator's")
    expires = _parse(grant.get("expiresAt"))
    if expires is None or now >= expires:
        return Refusal(403, f"the grant expired at {grant.get('expiresAt')}")
    return None


def decide_signing(
    request: Any, key: bytes, now: datetime, index_of: Callable[[str, str], DigestIndex]
) -> Signing | Refusal:
    """The signer's answer to ``request`` ({"grant": ..., "digests": [...]}): what to sign, or why not.
    ``index_of(dataset, snapshot)`` gives the digests the snapshot's manifest lists (the caller reads and
    verifies the manifest); it is called only for a sound grant, so an unsealed request reads nothing."""
    if not isinstance(request, dict) or not isinstance(request.get("digests"), list):
        return Refusal(400, 'expected {"grant": {...}, "digests": ["sha256:...", ...]}')
    grant, wanted = request.get("grant"), request["digests"]
    refused = check_grant(grant, key, now)
    if refused is not None or not isinstance(grant, dict):
        return refused or Refusal(400, "not a snapshot read grant")
    if not 0 < len(wanted) <= MAX_BATCH:
        return Refusal(400, f"name between 1 and {MAX_BATCH} digests")
    malformed = [d for d in wanted if not isinstance(d, str) or not DIGEST.fullmatch(d)]
    if malformed:
        return Refusal(400, f"not a sha256 digest: {str(malformed[0])[:80]!r}")
    dataset, snapshot = str(grant["dataset"]), str(grant["snapshot"])
    index = index_of(dataset, snapshot)
    foreign = [d for d in wanted if d not in index]
    if foreign:
        return Refusal(403, f"{foreign[0]} is not an object of snapshot {snapshot}")
    expires = _parse(grant["expiresAt"])
    assert expires is not None  # check_grant parsed it
    return Signing(dataset, snapshot, tuple(wanted), min(OBJECT_URL_LIFETIME, expires - now))


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
