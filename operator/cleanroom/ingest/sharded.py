"""A Dataset's ingest as an Indexed Job, the operator's side: plan a run in the store, and once every shard
is done, join the shards' results into one snapshot.

Layout of a run (``datasets.run_prefix``: ``ingest/<dataset>/<run>/``):
- ``plan/shards/<i>.json``: shard i's source files, each with a presigned GET URL (the pod holds no source
  key); ``plan/run.json`` last: how to de-identify (method, options, the key's id), the upload policy, and
  per shard the presigned URLs of its plan and of its result. The run's grant is one presigned URL, of
  ``plan/run.json``, in the run's Secret.
- ``out/objects/<hex>`` and ``out/shards/<i>.json``: what shard pods upload, under the only prefix their
  POST policy admits. Nothing there is trusted for its name or size: each object is read through and
  checked before it joins the content-addressed objects (``SnapshotStore.promote``), and the manifest is
  written from the results, then published last (``ingest.sharded_publish``, in memory that does not grow
  with the snapshot's files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from cleanroom.deid import DeidConfig
from cleanroom.ingest.pipeline import QuarantineEntry
from cleanroom.snapshots import FileEntry, SnapshotError, SnapshotStore
from cleanroom.snapshots.store import Presign

RUN_KIND = "cleanroom.dev/ingest-plan"


def plan_key(prefix: str) -> str:
    return prefix + "plan/run.json"


def shard_plan_key(prefix: str, index: int) -> str:
    return f"{prefix}plan/shards/{index}.json"


def out_prefix(prefix: str) -> str:
    return prefix + "out/"


def result_key(prefix: str, index: int) -> str:
    return f"{out_prefix(prefix)}shards/{index}.json"


def staged_key(prefix: str, digest: str) -> str:
    return f"{out_prefix(prefix)}objects/{digest.removeprefix('sha256:')}"


@dataclass(frozen=True)
class RunPlan:
    """What the operator decided for a run, as written into ``plan/run.json`` (less the URLs)."""

    dataset: str
    run: str
    prefix: str
    config: DeidConfig
    max_file_bytes: int
    lifetime: timedelta


@dataclass(frozen=True)
class Listing:
    """What a run is planned from: the sorted listing's digest and length (``summarize``)."""

    digest: str
    files: int


class ListingChanged(Exception):
    """The source listed other files while the plan was written than when it was summarized."""


def summarize(items: Iterable[str]) -> Listing:
    """One pass over a sorted listing, holding none of it."""
    hasher, files = _listing_hasher(), 0
    for item in items:
        hasher.update(item.encode() + b"\n")
        files += 1
    return Listing("sha256:" + hasher.hexdigest(), files)


def write_plan(
    store: SnapshotStore,
    plan: RunPlan,
    items: Iterable[str],
    listing: Listing,
    shards: Sequence[tuple[int, int]],
    source_url: Callable[[str], str],
    presign: Presign,
    store_endpoint: str,
    now: datetime | None = None,
) -> str:
    """Write the run's plan (each shard's files with their read URLs, then ``plan/run.json``) and return the
    grant: the presigned URL of ``plan/run.json``. ``items`` is the sorted listing ``listing`` summarized,
    read again shard by shard (only one shard's files are held); ListingChanged, before ``plan/run.json`` is
    written, when it is not the same listing. ``source_url`` presigns one source file; ``presign`` presigns
    the store's own keys as the pods reach them (``store_endpoint``)."""
    now = now or datetime.now(UTC)
    expires = now + plan.lifetime
    hasher, stream = _listing_hasher(), iter(items)
    for index, (start, end) in enumerate(shards):
        files = list(islice(stream, end - start))
        for item in files:
            hasher.update(item.encode() + b"\n")
        shard = {"index": index, "items": [[item, source_url(item)] for item in files]}
        store.put_document(shard_plan_key(plan.prefix, index), _json(shard))
    if next(stream, None) is not None or "sha256:" + hasher.hexdigest() != listing.digest:
        raise ListingChanged(
            f"the source listed {listing.files} files when the run was planned and other files while its "
            "shards were written (files were added, removed or renamed meanwhile)"
        )
    config = plan.config
    run = {
        "kind": RUN_KIND,
        "dataset": plan.dataset,
        "run": plan.run,
        "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "method": config.method.value,
        "options": sorted(o.value for o in config.options),
        "burnedInAnnotations": config.burned_in_annotations.value,
        "keyId": config.keyring.key_id,
        "pseudonymTable": config.pseudonym_table is not None,
        "maxFileBytes": plan.max_file_bytes,
        "files": listing.files,
        "listing": listing.digest,
        "upload": {
            "url": f"{store_endpoint.rstrip('/')}/{store.bucket}",
            "prefix": out_prefix(plan.prefix),
            "fields": store.upload_policy(out_prefix(plan.prefix), expires, plan.max_file_bytes + (1 << 20)),
        },
        "shards": [
            {
                "plan": presign(shard_plan_key(plan.prefix, index), plan.lifetime),
                "result": presign(result_key(plan.prefix, index), plan.lifetime),
            }
            for index in range(len(shards))
        ],
    }
    store.put_document(plan_key(plan.prefix), _json(run))
    return presign(plan_key(plan.prefix), plan.lifetime)


def listing_digest(items: Iterable[str]) -> str:
    """What a plan was split from: the sha256 of the sorted listing. A plan made again from the same
    listing has the same shards, so the shards' results stored under the old one still hold."""
    return summarize(items).digest


def _listing_hasher() -> Any:
    return hashlib.sha256()


def _json(document: dict[str, Any]) -> bytes:
    from cleanroom.snapshots import canonical_json

    return canonical_json(document)


def planned(store: SnapshotStore, prefix: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The run's plan when it is written and its grant has more than an hour to live; None otherwise (plan
    it, again)."""
    run = store.document(plan_key(prefix))
    if run is None:
        return None
    expires = datetime.strptime(run["expiresAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return run if expires - (now or datetime.now(UTC)) > timedelta(hours=1) else None


def shard_results(
    store: SnapshotStore, prefix: str, shards: int
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    for index in range(shards):
        yield index, store.document(result_key(prefix, index))


def entry_from_json(entry: dict[str, Any]) -> FileEntry:
    return FileEntry(
        path=entry["path"],
        digest=entry["digest"],
        size=int(entry["size"]),
        patient=entry["patient"],
        study=entry["study"],
        series=entry["series"],
        modality=entry.get("modality", ""),
        body_part=entry.get("bodyPart", ""),
        cleaned=tuple((c["attribute"], c["identifier"]) for c in entry.get("cleaned", ())),
    )


def entry_to_json(entry: FileEntry) -> dict[str, Any]:
    """A kept file as a shard's result records it: the manifest's entry and what the manifest counts."""
    return {
        **entry.to_json(),
        "patient": entry.patient,
        "study": entry.study,
        "series": entry.series,
        "modality": entry.modality,
        "bodyPart": entry.body_part,
    }


def quarantine_from_json(entry: dict[str, Any]) -> QuarantineEntry:
    return QuarantineEntry(entry["item"], entry["reason"], entry["detail"], entry.get("attribute", ""))


__all__ = [
    "RUN_KIND",
    "RunPlan",
    "SnapshotError",
    "entry_to_json",
    "listing_digest",
    "planned",
    "result_key",
    "shard_results",
    "staged_key",
    "write_plan",
]
