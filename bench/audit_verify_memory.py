"""Peak memory of verifying a long audit trail, beside the way it was verified before (the whole file read
into memory and every record's hash kept), in the same run. Each verification runs in a process of its own,
so its peak RSS is its own.

    .venv/bin/python bench/audit_verify_memory.py --records 200000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import Actor, Anchors, AuditEvent, AuditLog, fingerprint, verify_directory


def make_trail(directory: Path, records: int) -> str:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(directory, key, checkpoint_every=1000)
    for batch in range(records // 1000):
        log.append(
            [
                AuditEvent(
                    "workspace.started", Actor("service", "bench"), resources={"workspace": f"w{batch}-{i}"}
                )
                for i in range(1000)
            ]
        )
    log.checkpoint()
    return fingerprint(key.public_key())


def verify_once(directory: Path, trusted: str, mode: str) -> None:
    if mode == "before":  # what verify did before: the file read whole, every record's hash kept
        import cleanroom.audit.spool as spool
        import cleanroom.audit.verification as verification

        spool.read_lines = lambda d: (Path(d) / "records.jsonl").read_bytes().splitlines(keepends=True)  # type: ignore[assignment,return-value]
        verification.wanted_heads = lambda *tokens: None  # type: ignore[assignment,return-value]
    started = time.perf_counter()
    report = verify_directory(directory, Anchors(frozenset({trusted}), "bench"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{mode:7} {report.records} records, problem={report.problem}, "
        f"{time.perf_counter() - started:.2f} s, peak RSS {peak:.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--verify", nargs=3, metavar=("DIR", "FINGERPRINT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify:
        verify_once(Path(args.verify[0]), args.verify[1], args.verify[2])
        return 0
    with tempfile.TemporaryDirectory() as work:
        trail = Path(work) / "audit"
        trusted = make_trail(trail, args.records)
        for _ in range(args.runs):
            for mode in ("before", "after"):
                subprocess.run([sys.executable, __file__, "--verify", str(trail), trusted, mode], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
