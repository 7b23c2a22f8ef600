"""The operator's memory while it joins an Indexed Job's shards and publishes the snapshot, by snapshot size.

Each size runs in a process of its own over a store that makes the shards' results as they are read and
keeps nothing (documents built on request, objects taken as promoted, the manifest hashed and dropped), so
what grows is the operator's code alone: peak RSS over the process's RSS before the join, and tracemalloc's
peak. Shard results are as a shard pod writes them (``shard_worker.shard_document``): 1,000 files a shard,
200 instances a series, 4 series a study, one study a patient, UIDs as the de-identifier makes them.

    .venv/bin/python bench/publish_memory.py --files 2000 --files 20000 --files 200000
    .venv/bin/python bench/publish_memory.py --code /tmp/old-tree/operator ...   # another tree's code

``--code`` runs another checkout's ``cleanroom`` (the join of before: ``sharded.join_results``, then
``pipeline.publish``, which builds the whole manifest in memory).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PER_SHARD = 1000
PREFIX = "ingest/bench/r1/"


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _uid(*parts: int) -> str:
    return "2.25." + str(int(hashlib.sha256(repr(parts).encode()).hexdigest()[:30], 16))


def shard_result(index: int, files: int) -> dict[str, Any]:
    entries, origins = [], {}
    for n in range(index * PER_SHARD, min(files, (index + 1) * PER_SHARD)):
        patient, series = n // 800, n // 200
        path = f"PSN-{patient:08d}/{_uid(patient)}/{_uid(patient, series)}/{_uid(n)}.dcm"
        entries.append(
            {
                "path": path,
                "digest": "sha256:" + hashlib.sha256(path.encode()).hexdigest(),
                "size": 2048 + n % 100,
                "patient": f"PSN-{patient:08d}",
                "study": _uid(patient),
                "series": _uid(patient, series),
                "modality": "CT",
                "bodyPart": "CHEST",
            }
        )
        origins[path] = f"site/{n:08d}.dcm"
    entries.sort(key=lambda e: e["path"])
    return {"index": index, "files": entries, "origins": origins, "quarantined": [], "failed": []}


class GeneratedStore:
    """Shard results made on request; nothing kept."""

    def __init__(self, files: int) -> None:
        self.files = files

    def document(self, key: str) -> dict[str, Any] | None:
        index = int(key.rsplit("/", 1)[-1].removesuffix(".json"))
        # Through JSON bytes, as the store's client gives a document.
        return dict(json.loads(json.dumps(shard_result(index, self.files))))

    def promote(self, staged: str, digest: str, size: int | None = None) -> bool:
        return True

    def put_report(self, key: str, report: dict[str, Any]) -> str:
        return f"s3://bench/{key}"

    def publish(self, dataset: str, manifest: dict[str, Any]) -> str:
        from cleanroom.snapshots import canonical_json

        return "sha256:" + hashlib.sha256(canonical_json(manifest)).hexdigest()

    def publish_file(self, dataset: str, path: str) -> str:
        hasher = hashlib.sha256()
        with open(path, "rb") as manifest:
            while chunk := manifest.read(1 << 20):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()


class Reader:
    def describe(self) -> dict[str, str]:
        return {"kind": "s3", "location": "s3://raw/site/"}

    def skipped(self) -> list[Any]:
        return []


def join_and_publish(files: int) -> tuple[str, int]:
    from cleanroom.api import DeidentificationMethod
    from cleanroom.deid import DeidConfig, Keyring
    from cleanroom.ingest import sharded

    store: Any = GeneratedStore(files)
    shards = -(-files // PER_SHARD)
    config = DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring(b"k" * 32))
    origin = {"uid": "bench"}
    try:
        from cleanroom.ingest import sharded_publish
    except ImportError:
        from cleanroom.ingest import publish

        result = sharded.join_results(sharded.shard_results(store, PREFIX, shards), LookupError)  # type: ignore[attr-defined]
        sharded.promote_all(store, PREFIX, result.files)  # type: ignore[attr-defined]
        digest, _ = publish(
            store, dataset="bench", result=result, reader=Reader(), config=config, origin=origin
        )  # type: ignore[arg-type]
        return digest, len(result.files)
    joined = sharded_publish.publish_shards(
        store, PREFIX, shards, dataset="bench", reader=Reader(), config=config, origin=origin,  # type: ignore[arg-type]
        missing=LookupError, refuse=lambda result: None,
    )  # fmt: skip
    return joined.digest, joined.kept


def measure(files: int, traced: bool) -> dict[str, Any]:
    import cleanroom.ingest  # noqa: F401  (imports before the baseline)

    before = _rss_kib()
    if traced:
        tracemalloc.start()
    started = time.monotonic()
    digest, kept = join_and_publish(files)
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"files": kept, "digest": digest, "seconds": seconds, "rss_before_kib": before,
            "peak_rss_kib": high, "growth_kib": high - before, "traced_peak_kib": peak // 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, action="append", default=[])
    parser.add_argument(
        "--code", default=str(ROOT / "operator"), help="the operator/ directory whose code runs"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, args.code)
        print(json.dumps(measure(args.one, args.traced)))
        return
    print(f"code: {args.code}")
    print(
        "| files | peak RSS MiB | growth over the RSS before the join, MiB | tracemalloc peak MiB | seconds |"
    )
    print("| --- | --- | --- | --- | --- |")
    for files in args.files or [2000, 20000]:
        rows = []
        for traced in (False, True):
            command = [sys.executable, __file__, "--one", str(files), "--code", args.code]
            out = subprocess.run(command + (["--traced"] if traced else []), capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": args.code})  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        plain, traced_row = rows
        print(f"| {files} | {plain['peak_rss_kib'] / 1024:.1f} | {plain['growth_kib'] / 1024:.1f} | "
              f"{traced_row['traced_peak_kib'] / 1024:.1f} | {plain['seconds']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
