"""`cleanroom deid` and `cleanroom snapshot`: de-identify locally, and inspect or verify published snapshots.

Imported when one of these verbs runs; their arguments are in cli_grammar."""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cleanroom.api import DeidentificationMethod, DeidentificationOption
from cleanroom.api.contract import GRANT_URL_VARIABLE
from cleanroom.config import ingest_max_file_bytes, snapshot_location
from cleanroom.deid import DeidConfig, KeyError_, Keyring, key_from_bytes
from cleanroom.ingest import NOT_ATTEMPTED, DirectorySink, Limits, run
from cleanroom.snapshots import SnapshotError, SnapshotStore, short_digest
from cleanroom.sources import DirectoryReader

if TYPE_CHECKING:
    # The materializer's HTTP client is imported by the verbs that copy: `cleanroom deid` waits for none of it.
    from cleanroom.snapshots.grant import Materialized


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} files")
    sys.stderr.flush()


def deid_command(args: argparse.Namespace) -> int:
    method = DeidentificationMethod(args.method.capitalize())
    try:
        options = frozenset(DeidentificationOption(o) for o in args.option)
    except ValueError as error:
        names = ", ".join(o.value for o in DeidentificationOption)
        print(f"error: {error}; options are: {names}", file=sys.stderr)
        return 2
    try:
        if method is DeidentificationMethod.PSEUDONYMIZE:
            if not args.key_file:
                print(
                    "error: --method pseudonymize needs --key-file (at least 32 random bytes)",
                    file=sys.stderr,
                )
                return 2
            keyring = Keyring(key_from_bytes(Path(args.key_file).read_bytes()))
        else:
            keyring = Keyring.random()
    except (OSError, KeyError_) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    reader = DirectoryReader(str(Path(args.input).resolve()))
    try:
        items, skipped = reader.walk()
        cap = ingest_max_file_bytes()
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        # Outputs are named by instance and never overwritten: an earlier run's files would be taken for
        # duplicates, or mixed with this run's.
        print(f"error: {output} is not an empty directory; give a new or empty OUTPUT_DIR", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = run(
        reader,
        items,
        DeidConfig(method, keyring, options),
        DirectorySink(str(output.resolve())),
        workers=args.workers,
        progress=None if args.quiet else _bar,
        progress_every=0.2,
        limits=Limits(cap, cap),
        skipped=skipped,
    )
    elapsed = time.monotonic() - started
    if not args.quiet:
        sys.stderr.write("\n")
    if args.report:
        Path(args.report).write_text(json.dumps(result.report(), indent=2) + "\n")
    print(f"kept {len(result.files)} files in {output} ({len(items) / max(elapsed, 1e-9):.0f} files/s)")
    for what, entries in (("quarantined", result.quarantined), ("skipped", result.skipped)):
        reasons = collections.Counter(entry.reason for entry in entries)
        noun = "files" if what == "quarantined" else "entries that are not files"
        print(f"{what} {len(entries)} {noun}" + (":" if reasons else ""))
        for reason, count in reasons.most_common():
            print(f"  {count:6d}  {reason}")
    outage = result.outage
    if outage is not None:
        untried = sum(1 for f in result.failed if f.reason == NOT_ATTEMPTED)
        print(
            f"FAILED {len(result.failed) - untried} files ({outage.reason}), {untried} not tried; "
            f"first: {outage.item}: {outage.detail}",
            file=sys.stderr,
        )
    return 1 if result.failed else 0


def store_from_env() -> SnapshotStore:
    """The snapshot store named by CLEANROOM_SNAPSHOT_* variables, or the local stack's (.cluster/s3.env)."""
    env = dict(os.environ)
    local = Path(".cluster/s3.env")
    if "CLEANROOM_SNAPSHOT_ENDPOINT" not in env and local.exists():
        pairs = dict(line.split("=", 1) for line in local.read_text().splitlines() if "=" in line)
        env["CLEANROOM_SNAPSHOT_ENDPOINT"] = pairs["S3_ENDPOINT"]
        env["CLEANROOM_SNAPSHOT_ACCESS_KEY"] = pairs["S3_ACCESS_KEY"]
        env["CLEANROOM_SNAPSHOT_SECRET_KEY"] = pairs["S3_SECRET_KEY"]
    return SnapshotStore(snapshot_location(env))


def snapshot_command(args: argparse.Namespace) -> int:
    if args.snapshot_command == "materialize-grant":
        return materialize_grant_command(args)
    try:
        store = store_from_env()
        if args.snapshot_command == "gc":
            objects, grants = store.collect_garbage(), store.collect_expired_grants()
            print(f"removed {objects} unreferenced objects and {grants} expired grant documents")
            return 0
        if args.snapshot_command == "ls":
            names = [args.dataset] if args.dataset else store.datasets()
            print(f"{'DATASET':24} {'SNAPSHOT':14} {'FILES':>7} {'PATIENTS':>8} {'QUARANTINED':>11}  CREATED")
            for name in names:
                for digest, manifest in store.snapshots(name):
                    counts = manifest["counts"]
                    print(
                        f"{name:24} {short_digest(digest):14} {counts['files']:7d} {counts['patients']:8d} "
                        f"{manifest['quarantine']['files']:11d}  {manifest['createdAt']}"
                    )
            return 0
        digest = _resolve(store, args.dataset, args.snapshot)
        if args.snapshot_command == "show":
            manifest = store.manifest(args.dataset, digest)
            if not args.files:
                manifest = {**manifest, "files": f"{len(manifest['files'])} files (use --files to list them)"}
            print(json.dumps({"digest": digest, **manifest}, indent=2))
            return 0
        if args.snapshot_command == "materialize":
            return _materialize(store, args.dataset, digest, Path(args.directory))
        problems = store.verify(args.dataset, digest)
        for problem in problems:
            print(f"MISMATCH {problem.path}: {problem.problem}")
        files = len(store.manifest(args.dataset, digest)["files"])
        print(f"{'FAILED' if problems else 'OK'}: {digest} ({files} files, {len(problems)} mismatches)")
        return 1 if problems else 0
    except SnapshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _materialize(store: SnapshotStore, dataset: str, digest: str, directory: Path) -> int:
    """Copy a snapshot into ``directory`` with the store's own credentials, verifying every object."""
    from cleanroom.snapshots.grant import write_verified

    return _report(
        write_verified(digest, store.manifest(dataset, digest), store.get_object, directory), directory
    )


def materialize_grant_command(args: argparse.Namespace) -> int:
    """The materializer Job: copy the snapshot a grant covers, with no storage credentials at all."""
    from cleanroom.snapshots.grant import materialize_from_grant

    url = os.environ.get(GRANT_URL_VARIABLE, "")
    if not url:
        print(
            f"error: {GRANT_URL_VARIABLE} is not set (the workspace's reader Secret holds it)",
            file=sys.stderr,
        )
        return 2
    try:
        done = materialize_from_grant(
            url, Path(args.directory), os.environ.get("CLEANROOM_SNAPSHOT_CA_BUNDLE", "")
        )
    except SnapshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _report(done, Path(args.directory))


def _report(done: Materialized, directory: Path) -> int:
    for mismatch in done.mismatches:
        print(f"MISMATCH {mismatch}", file=sys.stderr)
    if done.mismatches:
        print(
            f"FAILED: {len(done.mismatches)} objects of {done.snapshot} do not match the manifest; "
            "the volume is not usable",
            file=sys.stderr,
        )
        return 1
    print(f"materialized {done.files} files of {done.snapshot} into {directory}")
    return 0


def _resolve(store: SnapshotStore, dataset: str, snapshot: str) -> str:
    """A full digest from a prefix, or the latest snapshot when none is given."""
    digests = [d for d, _m in store.snapshots(dataset)]
    if not digests:
        raise SnapshotError(f"dataset {dataset!r} has no published snapshot")
    if not snapshot:
        return digests[0]
    wanted = snapshot.removeprefix("sha256:")
    matches = [d for d in digests if d.removeprefix("sha256:").startswith(wanted)]
    if len(matches) != 1:
        raise SnapshotError(f"{snapshot!r} matches {len(matches)} snapshots of {dataset!r}; give more digits")
    return matches[0]
