"""`cleanroom audit`: query, follow, export and verify the audit trail (verify works offline on an export).

Imported when an audit verb runs; its arguments are in cli_grammar."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cleanroom.audit import Report, export, follow, matching, read_records
from cleanroom.audit.csvsafe import write_csv
from cleanroom.audit.index import AuditIndex
from cleanroom.audit.spool import verify_directory
from cleanroom.audit.trust import Anchors, NoTrustAnchor, configured

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
    if args.audit_command == "serve":
        from cleanroom.auditweb import serve

        try:
            serve(args.host, args.port, args.tls_cert, args.tls_key, args.metrics_port)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.audit_command == "fingerprint":
        from cleanroom.audit import key_fingerprint

        try:
            print(key_fingerprint(args.key))
        except (OSError, ValueError) as error:
            print(f"error: cannot read the key {args.key}: {error}", file=sys.stderr)
            return 2
        return 0
    if args.audit_command == "rotate-key":
        from cleanroom.audit import AuditLog, load_signing_key

        directory = audit_dir(args.dir)
        AuditLog(directory, load_signing_key(args.new), previous_key=load_signing_key(args.old))
        print(f"{directory}: signing handed on to {args.new}, signed by the key it replaces")
        return 0
    if args.audit_command in ("verify", "verify-store"):
        try:
            target = Path(args.directory) if args.audit_command == "verify" else None
            anchors = configured(args.trusted_key or (), args.trusted_keys, trail=target)
        except NoTrustAnchor as missing:
            print(f"error: {missing}", file=sys.stderr)
            return 2
        if target is not None:
            receipts = [token for path in args.receipts or () for token in Path(path).read_text().split()]
            report = verify_directory(
                target, anchors, receipts=receipts, max_age_seconds=args.max_checkpoint_age
            )
            return _print_report(report, anchors, len(receipts))
    if args.audit_command in ("ship", "verify-store"):
        from cleanroom.audit.segments import shipper_from_env, verify_store

        shipper = shipper_from_env(audit_dir(getattr(args, "dir", None)))
        if shipper is None:
            print(
                "error: set CLEANROOM_AUDIT_S3_ENDPOINT (and _BUCKET, _ACCESS_KEY, _SECRET_KEY)",
                file=sys.stderr,
            )
            return 2
        if args.audit_command == "ship":
            result = shipper.ship()
            print(
                f"shipped {result.records} records in {result.segments} segments; store holds up to {result.last_seq}"
            )
            return 0
        store = verify_store(shipper.client, shipper.bucket, anchors, shipper.prefix)
        if store.problem:
            print(f"FAILED at record {store.problem.seq}: {store.problem.kind}: {store.problem.detail}")
            return 1
        print(
            f"OK: {store.records} records in {store.segments} locked segments, every link and checkpoint holds"
        )
        return 0
    directory = audit_dir(args.dir)
    if args.audit_command == "export":
        count = export(directory, args.target)
        print(f"exported {count} records with their checkpoints and public keys to {args.target}")
        return 0
    filters = {
        "actor": args.actor,
        "action": args.action,
        "dataset": args.dataset,
        "workspace": args.workspace,
        "since": args.since,
        "until": args.until,
    }
    if args.audit_command == "tail":
        try:
            for record in matching(follow(directory), **filters):
                _print([record], args.output)
                sys.stdout.flush()
        except KeyboardInterrupt:
            return 0
    try:
        found = list(AuditIndex(directory).query(filters))
    except sqlite3.OperationalError:  # a read-only copy of a trail: filter the chain itself
        found = list(matching(read_records(directory), **filters))
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
