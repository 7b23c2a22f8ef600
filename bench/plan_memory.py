"""The operator's memory while it plans a Job ingest of an S3 source (issue 18: "the operator's memory stays
flat whatever the dataset's size"), by the number of source files, beside the listing held whole as the
operator held it before (``reader.items()``, sorted in memory, then split).

Each size and way runs in a process of its own over a generated listing (an ``S3Reader`` whose store lists
keys of a 2,000-patient hospital archive in S3's order, a page at a time, without a server) and a store that
keeps nothing it is sent (shard plans with a presigned URL per file, as the operator writes them). Printed:
peak RSS over the process's RSS before planning, and tracemalloc's peak.

    .venv/bin/python bench/plan_memory.py --files 20000 --files 200000 --files 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

PER_SHARD = 1000


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def generated_reader(files: int) -> Any:
    from cleanroom.sources import S3Reader

    class GeneratedListing(S3Reader):
        """Keys site/P<patient>/S<study>/<instance>.dcm, in S3's order, made as they are listed."""

        def _keys(self) -> Iterator[str]:
            for n in range(files):
                yield f"site/P{n // 800:06d}/S{n // 200:08d}/{n:09d}.dcm"

    return GeneratedListing("http://store.invalid:7070", "raw", "site/")


class DiscardingStore:
    bucket = "cleanroom-snapshots"

    def put_document(self, key: str, data: bytes) -> None:
        pass

    def upload_policy(self, prefix: str, expires: Any, max_bytes: int) -> dict[str, str]:
        return {"policy": "p" * 600, "x-amz-signature": "s" * 64}


def _presigned(key: str) -> str:
    """As long as a SigV4 presigned GET of the key is."""
    return (
        f"http://store.invalid:7070/raw/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        + "c" * 60
        + (
            "&X-Amz-Date=20261203T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
            + "0" * 64
        )
    )


def plan(files: int, held: bool) -> int:
    """Plan a run as the operator does (``handlers._ingest_job``: the listing, its summary, the shards
    written); ``held``: from the listing sorted and held in memory, as before. The number of shards."""
    from cleanroom.api import DeidentificationMethod
    from cleanroom.datasets.sharding import split
    from cleanroom.deid import DeidConfig, Keyring
    from cleanroom.handlers._ingest_job import _listing
    from cleanroom.ingest import sharded

    reader = generated_reader(files)
    if held:
        items = reader.items()
        again, listing = (lambda: items), sharded.summarize(items)
    else:
        again, listing = _listing(reader)
    shards = split(listing.files, PER_SHARD)
    config = DeidConfig(DeidentificationMethod.ANONYMIZE, Keyring(b"k" * 32))
    run = sharded.RunPlan("bench", "r1", "ingest/bench/r1/", config, 1 << 30, timedelta(hours=24))
    sharded.write_plan(
        DiscardingStore(),  # type: ignore[arg-type]
        run,
        again(),
        listing,
        shards,
        _presigned,
        lambda key, lifetime: _presigned(key),
        "http://store.invalid:7070",
    )
    return len(shards)


def measure(files: int, held: bool, traced: bool) -> dict[str, Any]:
    import cleanroom.handlers._ingest_job  # noqa: F401  (imports before the baseline)

    before = _rss_kib()
    if traced:
        tracemalloc.start()
    started = time.monotonic()
    shards = plan(files, held)
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "shards": shards,
        "seconds": seconds,
        "growth_kib": high - before,
        "traced_peak_kib": peak // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, action="append", default=[])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--held", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.held, args.traced)))
        return
    print(
        "| files | shards | listing held (before): RSS growth / tracemalloc peak / s | streamed: RSS growth / tracemalloc peak / s |"
    )
    print("| --- | --- | --- | --- |")
    for files in args.files or [20000, 200000]:
        cells = []
        for held in (True, False):
            rows = []
            for traced in (False, True):
                command = [sys.executable, __file__, "--one", str(files)]
                command += ["--held"] * held + ["--traced"] * traced
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            plain, traced_row = rows
            cells.append(f"{plain['growth_kib'] / 1024:.1f} MiB / {traced_row['traced_peak_kib'] / 1024:.1f} MiB / "
                         f"{plain['seconds']:.1f} s")  # fmt: skip
        print(f"| {files:,} | {rows[0]['shards']} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
