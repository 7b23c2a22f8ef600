"""Audit trail throughput, side by side with the floor (a plain fsync'd JSON-lines append, same batches):
durable append events/s, verify events/s, and query latency (p50/p95) over the whole log.

    .venv/bin/python bench/audit.py [--events 100000] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import (
    Actor,
    Anchors,
    AuditEvent,
    AuditLog,
    fingerprint,
    matching,
    public_keys,
    read_checkpoints,
    read_records,
    verify,
)
from cleanroom.audit.index import AuditIndex
from cleanroom.audit.spool import verify_directory

ACTOR = Actor("service", "system:serviceaccount:cleanroom-system:cleanroom-operator")


def events(n: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            "workspace.started",
            ACTOR,
            resources={"workspace": f"w{i % 500}", "dataset": f"d{i % 20}"},
            purpose="bench",
        )
        for i in range(n)
    ]


def floor_append(path: Path, batches: list[list[AuditEvent]]) -> float:
    started = time.perf_counter()
    with path.open("ab") as handle:
        for batch in batches:
            handle.write(b"".join(json.dumps(e.to_json(), sort_keys=True).encode() + b"\n" for e in batch))
            handle.flush()
            os.fsync(handle.fileno())
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cleanroom-audit-bench-"))
    all_events = events(args.events)
    batches = [all_events[i : i + args.batch] for i in range(0, len(all_events), args.batch)]

    floor_seconds = floor_append(work / "floor.jsonl", batches)
    log = AuditLog(work / "audit", Ed25519PrivateKey.generate())
    started = time.perf_counter()
    for batch in batches:
        log.append(batch)
    log.checkpoint()
    append_seconds = time.perf_counter() - started

    records = read_records(work / "audit")
    started = time.perf_counter()
    problem = verify(records, read_checkpoints(work / "audit"), public_keys(work / "audit"))
    parsed_verify_seconds = time.perf_counter() - started
    assert problem is None, problem
    # What `cleanroom audit verify` and the page run: the stored bytes, read from disk, no JSON parsing.
    started = time.perf_counter()
    anchors = Anchors(frozenset({fingerprint(log.signing_key.public_key())}), "bench")
    report = verify_directory(work / "audit", anchors)
    verify_seconds = time.perf_counter() - started
    assert report.problem is None and report.records == args.events, report.problem

    latencies = []
    for index in range(args.queries):
        started = time.perf_counter()
        list(matching(read_records(work / "audit"), workspace=f"w{index}", action="workspace."))
        latencies.append(time.perf_counter() - started)
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))]

    started = time.perf_counter()
    index = AuditIndex(work / "audit")
    index.refresh()
    index_seconds = time.perf_counter() - started
    indexed = []
    for index_no in range(args.queries * 5):
        started = time.perf_counter()
        list(index.query({"workspace": f"w{index_no}", "action": "workspace."}))
        indexed.append(time.perf_counter() - started)
    ip50 = statistics.median(indexed)
    ip95 = sorted(indexed)[int(0.95 * (len(indexed) - 1))]

    n = args.events
    print(f"{n} events in batches of {args.batch}, {os.cpu_count()} cores, files in {work}")
    print(
        f"  durable append: floor {n / floor_seconds:10.0f} events/s   cleanroom {n / append_seconds:10.0f} events/s   ratio {floor_seconds / append_seconds:.2f}x"
    )
    print(
        f"  verify (links + {len(read_checkpoints(work / 'audit'))} signatures): byte-level incl. reading the file "
        f"{n / verify_seconds:10.0f} events/s   (parsed records, re-serialized: {n / parsed_verify_seconds:.0f} events/s)"
    )
    print(f"  query (read the whole log, filter): p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(
        f"  query (SQLite index, built once in {index_seconds:.1f} s): p50 {ip50 * 1000:.1f} ms, p95 {ip95 * 1000:.1f} ms"
        f"   speed-up over the scan at p95 {p95 / ip95:.0f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
