"""Read grant size and signing time by snapshot size, the per-object grant (until issue 18) beside the sealed
grant: 10^4, 10^5 and 10^6 objects. Pure: URLs are presigned locally with the real S3 client (no request is
made), documents are built in memory; no cluster or store is needed.

    .venv/bin/python bench/grant_size.py [--objects 10000 100000 1000000]

Per snapshot size it prints the bytes of the grant document (what the operator writes to the store and signs
again at each half-life), the bytes of the workspace's Secret (one URL, in both designs), the CPU seconds the
operator spends issuing one grant, and, for the sealed grant, the signer's cost of the same objects spread
over the copy (presigning them a batch at a time as the materializer asks) and the memory of its digest
index. The manifest's size is printed for scale: the materializer reads it in both designs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanroom._clients.s3 import S3Location
from cleanroom.snapshots.manifest import canonical_json, content_digest
from cleanroom.snapshots.signing import MAX_BATCH, DigestIndex, build_sealed_grant, seal_key, timestamp
from cleanroom.snapshots.store import Presign, manifest_key, object_key, presigner

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
LIFETIME = timedelta(hours=1)
DATASET = "procancer-i-prostate-mri"
ENDPOINT = "http://s3.cleanroom-system:7070"
NAMESPACE, WORKSPACE = "oncology-team-a", "prostate-segmentation"


def manifest_of(objects: int) -> dict[str, Any]:
    """A manifest shaped like an ingest's: a path per instance, its digest and size."""
    files = [
        {
            "path": f"P{i // 1000:05d}/S{i // 100:06d}/SE{i // 20:07d}/{i:08d}.dcm",
            "digest": content_digest(i.to_bytes(8, "big")),
            "size": 524_288,
        }
        for i in range(objects)
    ]
    return {"dataset": DATASET, "files": files, "createdAt": timestamp(NOW)}


def per_object_grant(snapshot: str, manifest: dict[str, Any], presign: Presign) -> dict[str, Any]:
    """The grant document as issued until issue 18 (snapshots/grant.py's build_grant then): one presigned
    URL per object."""
    return {
        "kind": "cleanroom.dev/snapshot-grant",
        "dataset": DATASET,
        "snapshot": snapshot,
        "issuedAt": timestamp(NOW),
        "expiresAt": timestamp(NOW + LIFETIME),
        "manifest": presign(manifest_key(DATASET, snapshot), LIFETIME),
        "objects": {
            entry["digest"]: presign(object_key(entry["digest"]), LIFETIME) for entry in manifest["files"]
        },
    }


def sealed_grant(snapshot: str, presign: Presign) -> dict[str, Any]:
    document = build_sealed_grant(
        namespace=NAMESPACE,
        workspace=WORKSPACE,
        dataset=DATASET,
        snapshot=snapshot,
        manifest_url=presign(manifest_key(DATASET, snapshot), LIFETIME),
        key=seal_key("bench-reader-secret"),
        lifetime=LIFETIME,
        now=NOW,
    )
    return {**document, "signer": "http://cleanroom-grant-signer.cleanroom-system:8443"}


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.process_time()
    result = work()
    return result, time.process_time() - started


def signer_cost(manifest: dict[str, Any], presign: Presign) -> tuple[float, int]:
    """CPU seconds to presign every object in batches as the signer does, and the index's peak memory."""
    tracemalloc.start()
    index = DigestIndex(entry["digest"] for entry in manifest["files"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    digests = [entry["digest"] for entry in manifest["files"]]

    def sign_all() -> None:
        for at in range(0, len(digests), MAX_BATCH):
            batch = digests[at : at + MAX_BATCH]
            assert all(digest in index for digest in batch)
            for digest in batch:
                presign(object_key(digest), LIFETIME)

    _, seconds = timed(sign_all)
    return seconds, peak


def mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size:,} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    presign = presigner(
        S3Location(ENDPOINT, "cleanroom-snapshots", "AKIAREADER0000000000", "s" * 40, "us-east-1")
    )
    print(
        f"{'objects':>9} | {'manifest':>9} | {'old grant':>10} {'old issue s':>11} | "
        f"{'new grant':>9} {'new issue s':>11} | {'Secret':>7} | {'signer s':>8} {'index peak':>10}"
    )
    for objects in args.objects:
        print(row(objects, presign), flush=True)


def row(objects: int, presign: Presign) -> str:
    manifest = manifest_of(objects)
    manifest_bytes = canonical_json(manifest)
    snapshot = content_digest(manifest_bytes)
    old, old_seconds = timed(lambda: canonical_json(per_object_grant(snapshot, manifest, presign)))
    new, new_seconds = timed(lambda: canonical_json(sealed_grant(snapshot, presign)))
    secret = len(presign(f"grants/{NAMESPACE}/{WORKSPACE}/20261202T090000Z-0a1b2c3d.json", LIFETIME))
    signer_seconds, index_bytes = signer_cost(manifest, presign)
    return (
        f"{objects:>9,} | {mb(len(manifest_bytes)):>9} | {mb(len(old)):>10} {old_seconds:>11.2f} | "
        f"{mb(len(new)):>9} {new_seconds:>11.4f} | {secret:>5} B | {signer_seconds:>8.2f} {mb(index_bytes):>10}"
    )


if __name__ == "__main__":
    main()
