"""`cleanroom audit`: query, follow, export and verify the audit trail (verify works offline on an export).

Imported when an audit verb runs; its arguments are in cli_grammar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cleanroom.audit import Report, export, follow, matching
from cleanroom.audit.csvsafe import write_csv
from cleanroom.audit.index import find
from cleanroom.audit.spool import verify_directory
from cleanroom.audit.trust import Anchors, NoTrustAnchor, configured

if TYPE_CHECKING:  # the store's client loads only for the verbs that ship or read segments
    from cleanroom.audit.segments import SegmentShipper

COLUMNS = ("seq", "time", "actor", "action", "outcome", "dataset", "workspace", "reason")


def audit_dir(given: str | None) -> Path:
    """--dir, else CLEANROOM_AUDIT_DIR, else the local stack's .cluster/audit."""
    path = Path(given or os.environ.get("CLEANROOM_AUDIT_DIR") or ".cluster/audit")
    if not (path / "records.jsonl").exists():
        raise SystemExit(
            f"error: no audit trail in {path} (records.jsonl missing); pass --dir or set CLEANROOM_AUDIT_DIR"
        )
    return path


def _row(record: dict[str, Any]) -> dict[str, str]:
    event = record["event"]
    resources = event.get("resources") or {}
    return {
        "seq": str(record["seq"]),
        "time": event["time"],
        "actor": event["actor"]["name"],
        "action": event["action"],
        "outcome": event["outcome"],
        "dataset": resources.get("dataset", ""),
        "workspace": "/".join(
            p for p in (resources.get("namespace", ""), resources.get("workspace", "")) if p
        ),
        "reason": event.get("reason", ""),
    }


def _print(records: Iterable[dict[str, Any]], output: str) -> None:
    if output == "json":
        for record in records:
            print(json.dumps(record, sort_keys=True))
        return
    rows = [_row(r) for r in records]
    if output == "csv":
        write_csv(sys.stdout, COLUMNS, ([row[column] for column in COLUMNS] for row in rows))
        return
    print(f"{'SEQ':>6}  {'TIME':24}  {'ACTION':26}  {'OUTCOME':8}  {'DATASET':18}  {'WORKSPACE':28}  ACTOR")
    for row in rows:
        print(
            f"{row['seq']:>6}  {row['time'][:24]:24}  {row['action']:26}  {row['outcome']:8}  {row['dataset'][:18]:18}  "
            f"{row['workspace'][:28]:28}  {row['actor']}"
        )


def audit_command(args: argparse.Namespace) -> int:
    verbs: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "fingerprint": _fingerprint,
        "rotate-key": _rotate_key,
        "verify": _verify,
        "verify-store": _verify_store,
        "ship": _ship,
        "export": _export,
        "tail": _tail,
    }
    return verbs.get(args.audit_command, _query)(args)


def _serve(args: argparse.Namespace) -> int:
    from cleanroom.auditweb import serve

    try:
        serve(args.host, args.port, args.tls_cert, args.tls_key, args.metrics_port)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from cleanroom.audit import key_fingerprint

    try:
        print(key_fingerprint(args.key))
    except (OSError, ValueError) as error:
        print(f"error: cannot read the key {args.key}: {error}", file=sys.stderr)
        return 2
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    from cleanroom.audit import AuditLog, load_signing_key

    directory = audit_dir(args.dir)
    AuditLog(directory, load_signing_key(args.new), previous_key=load_signing_key(args.old))
    print(f"{directory}: signing handed on to {args.new}, signed by the key it replaces")
    return 0


def _anchors(args: argparse.Namespace, trail: Path | None) -> Anchors | None:
    """The keys verification trusts (pinned, never the trail's own), or None after saying none are set."""
    try:
        return configured(args.trusted_key or (), args.trusted_keys, trail=trail)
    except NoTrustAnchor as missing:
        print(f"error: {missing}", file=sys.stderr)
        return None


def _verify(args: argparse.Namespace) -> int:
    target = Path(args.directory)
    anchors = _anchors(args, target)
    if anchors is None:
        return 2
    receipts = [token for path in args.receipts or () for token in Path(path).read_text().split()]
    report = verify_directory(target, anchors, receipts=receipts, max_age_seconds=args.max_checkpoint_age)
    return _print_report(report, anchors, len(receipts))


def _shipper(args: argparse.Namespace) -> SegmentShipper | None:
    from cleanroom.audit.segments import shipper_from_env

    shipper = shipper_from_env(audit_dir(getattr(args, "dir", None)))
    if shipper is None:
        print(
            "error: set CLEANROOM_AUDIT_S3_ENDPOINT (and _BUCKET, _ACCESS_KEY, _SECRET_KEY)", file=sys.stderr
        )
    return shipper


def _ship(args: argparse.Namespace) -> int:
    shipper = _shipper(args)
    if shipper is None:
        return 2
    result = shipper.ship()
    print(
        f"shipped {result.records} records in {result.segments} segments; store holds up to {result.last_seq}"
    )
    return 0


def _verify_store(args: argparse.Namespace) -> int:
    from cleanroom.audit.segments import verify_store

    anchors = _anchors(args, None)
    if anchors is None:
        return 2
    shipper = _shipper(args)
    if shipper is None:
        return 2
    store = verify_store(shipper.client, shipper.bucket, anchors, shipper.prefix)
    if store.problem:
        print(f"FAILED at record {store.problem.seq}: {store.problem.kind}: {store.problem.detail}")
        return 1
    print(f"OK: {store.records} records in {store.segments} locked segments, every link and checkpoint holds")
    return 0


def _export(args: argparse.Namespace) -> int:
    count = export(audit_dir(args.dir), args.target)
    print(f"exported {count} records with their checkpoints and public keys to {args.target}")
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "actor": args.actor,
        "action": args.action,
        "dataset": args.dataset,
        "workspace": args.workspace,
        "since": args.since,
        "until": args.until,
    }


def _tail(args: argparse.Namespace) -> int:
    try:
        for record in matching(follow(audit_dir(args.dir)), **_filters(args)):
            _print([record], args.output)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    return _query(args)


def _query(args: argparse.Namespace) -> int:
    directory, filters = audit_dir(args.dir), _filters(args)
    found, _total = find(directory, filters)  # a read-only copy of a trail is filtered from the chain
    _print(found, args.output)
    return 0


def _print_report(report: Report, anchors: Anchors, receipts: int) -> int:
    if report.problem:
        print(f"FAILED at record {report.problem.seq}: {report.problem.kind}: {report.problem.detail}")
        return 1
    print(
        f"OK: {report.records} records, every link holds, {report.checkpoints} signed checkpoints verify "
        f"with trusted keys ({anchors.source})"
        + (f", {receipts} writers' receipts agree" if receipts else "")
    )
    if report.unsealed:
        print(
            f"unsealed: records {report.sealed + 1} to {report.records} come after the newest checkpoint "
            f"({report.newest or 'none'}); no signature covers them yet"
        )
    return 0
