"""The arguments of `cleanroom deid`, `snapshot`, `audit`, `token`, `hub` and `notebook-meter`, and nothing
that runs them.

Parsing imports only argparse: each verb's module (`cli_deid`, `cli_audit`, `cli_hub`) and the libraries
under it (pydicom, minio, cryptography, JupyterHub) load when that verb runs, so `--help` and a mistyped
argument answer at once (tests/unit/test_cli_imports.py holds this).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

# api.contract is standard-library only (the import contract's light-api holds it), unlike snapshots.grant.
from cleanroom.api.contract import GRANT_URL_VARIABLE

Command = Callable[[argparse.Namespace], int]
AUDIT_DIR_HELP = "audit directory (default: CLEANROOM_AUDIT_DIR or .cluster/audit)"


def runs(module: str, function: str) -> Command:
    """A verb's function, imported from ``cleanroom.<module>`` when the verb runs."""

    def run(args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(f"cleanroom.{module}"), function)
        return command(args)

    return run


def add_deid_commands(commands: argparse._SubParsersAction[Any]) -> None:
    deid = commands.add_parser(
        "deid",
        help="de-identify a directory of DICOM files locally (PS3.15 Annex E)",
        description="De-identify every file under INPUT_DIR into OUTPUT_DIR as patient/study/series/instance.dcm; "
        "files that cannot be cleaned are listed as quarantined with their reason.",
    )
    deid.add_argument("input", metavar="INPUT_DIR")
    deid.add_argument("output", metavar="OUTPUT_DIR")
    deid.add_argument("--method", choices=["anonymize", "pseudonymize"], default="pseudonymize")
    deid.add_argument("--key-file", help="site pseudonymization key (32+ bytes, raw or base64)")
    deid.add_argument(
        "--option", action="append", default=[], metavar="NAME", help="a PS3.15 option, e.g. CleanDescriptors"
    )
    deid.add_argument("--report", metavar="FILE", help="write the quarantine report (JSON) here")
    deid.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    deid.add_argument("--quiet", action="store_true", help="no progress bar")
    deid.set_defaults(func=runs("cli_deid", "deid_command"))

    snapshot = commands.add_parser("snapshot", help="list, show and verify published snapshots")
    verbs = snapshot.add_subparsers(dest="snapshot_command", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="list snapshots")
    ls.add_argument("dataset", nargs="?", default="")
    for verb, text in (("show", "print a snapshot's manifest"), ("verify", "recompute every digest")):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("dataset")
        parser.add_argument("snapshot", nargs="?", default="", help="digest or prefix; default: the latest")
        if verb == "show":
            parser.add_argument("--files", action="store_true", help="include the file list")
    materialize = verbs.add_parser("materialize", help="copy a verified snapshot into a directory")
    materialize.add_argument("dataset")
    materialize.add_argument("snapshot", help="digest or prefix")
    materialize.add_argument("directory")
    verbs.add_parser(
        "gc",
        help="delete objects no snapshot references (after a grace period) and grant documents past any use",
    )
    snapshot.set_defaults(func=runs("cli_deid", "snapshot_command"))
    grant = verbs.add_parser(
        "materialize-grant",
        help="copy the snapshot a read grant covers into a directory (the materializer Job)",
        description=f"Reads the grant URL from {GRANT_URL_VARIABLE}; needs no storage credentials.",
    )
    grant.add_argument("directory")


def _add_trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trusted-key",
        action="append",
        metavar="FINGERPRINT",
        help="a trusted signing key's fingerprint (ed25519:<hex>; `cleanroom audit fingerprint KEY.pem`), repeatable",
    )
    parser.add_argument(
        "--trusted-keys",
        metavar="FILE",
        help="a file of trusted fingerprints, one a line (default: CLEANROOM_AUDIT_TRUSTED_KEYS, else "
        ".cluster/audit-trusted-keys); never a file inside the trail",
    )


def add_audit_commands(commands: argparse._SubParsersAction[Any]) -> None:
    audit = commands.add_parser("audit", help="query, follow, export and verify the audit trail")
    verbs = audit.add_subparsers(dest="audit_command", required=True, metavar="VERB")
    for verb, text in (("query", "list matching events"), ("tail", "print events as they are appended (-f)")):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("--dir", help=AUDIT_DIR_HELP)
        parser.add_argument("--actor", default="", help="who (user or service account)")
        parser.add_argument("--action", default="", help="an action, or a prefix ending in '.' (workspace.)")
        parser.add_argument("--dataset", default="")
        parser.add_argument("--workspace", default="")
        parser.add_argument("--since", default="", help="RFC 3339 time, e.g. 2026-11-01T00:00:00Z")
        parser.add_argument("--until", default="")
        parser.add_argument("--output", "-o", choices=["table", "json", "csv"], default="table")
        if verb == "tail":
            parser.add_argument(
                "-f", "--follow", action="store_true", default=True, help="keep following (default)"
            )
    exporter = verbs.add_parser(
        "export", help="copy records, signed checkpoints and public keys to a directory"
    )
    exporter.add_argument("target", metavar="DIR")
    exporter.add_argument("--dir", help=AUDIT_DIR_HELP)
    verifier = verbs.add_parser(
        "verify", help="verify an exported (or live) trail offline; exit 1 naming the first bad record"
    )
    verifier.add_argument("directory", metavar="DIR")
    _add_trust_options(verifier)
    verifier.add_argument(
        "--receipts",
        action="append",
        metavar="FILE",
        help="a writer's receipts.jsonl (from its outbox): the trail must agree with each, repeatable",
    )
    verifier.add_argument(
        "--max-checkpoint-age",
        type=float,
        metavar="SECONDS",
        help="fail when the newest checkpoint is older than this (the service signs one every minute)",
    )
    fingerprint = verbs.add_parser("fingerprint", help="print a signing key's fingerprint, for the verifiers")
    fingerprint.add_argument("key", metavar="KEY.pem", help="the Ed25519 key (private or public, PEM)")
    rotate = verbs.add_parser(
        "rotate-key", help="hand signing on to a new key with a checkpoint signed by the key it replaces"
    )
    rotate.add_argument("--dir", help=AUDIT_DIR_HELP)
    rotate.add_argument("--old", required=True, metavar="OLD.pem", help="the key signing the trail now")
    rotate.add_argument("--new", required=True, metavar="NEW.pem", help="the key that signs from now on")
    shipper = verbs.add_parser(
        "ship", help="upload unshipped records to S3 as Object-Locked segments (one pass)"
    )
    shipper.add_argument("--dir", help=AUDIT_DIR_HELP)
    store = verbs.add_parser(
        "verify-store", help="verify the chain from the segments in S3 (every version of each)"
    )
    store.add_argument("--dir", help=AUDIT_DIR_HELP)
    _add_trust_options(store)
    server = verbs.add_parser(
        "serve", help="run the audit service: the writers' ingestion endpoint and the security officers' page"
    )
    server.add_argument("--host", default="0.0.0.0")
    server.add_argument("--port", type=int, default=8090)
    server.add_argument("--tls-cert", default="", help="serve HTTPS with this certificate (PEM)")
    server.add_argument("--tls-key", default="", help="its private key (PEM)")
    server.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve GET /metrics (Prometheus, plain HTTP) on this port only; default 0: on --port",
    )
    audit.set_defaults(func=runs("cli_audit", "audit_command"))


def add_hub_commands(commands: argparse._SubParsersAction[Any]) -> None:
    token = commands.add_parser("token", help="sign-in tokens for local development")
    verbs = token.add_subparsers(dest="token_command", required=True, metavar="VERB")
    issue = verbs.add_parser(
        "issue",
        help="mint a sign-in JWT from the dev issuer key that `make dev` creates (never a production key)",
    )
    issue.add_argument("--user", required=True, help="the user, e.g. alice@hospital.example")
    issue.add_argument("--group", action="append", default=[], help="a group claim (repeatable)")
    issue.add_argument("--lifetime", type=int, default=8 * 3600, help="seconds until the token expires")
    issue.add_argument("--init", action="store_true", help="create the dev issuer key first if missing")
    issue.set_defaults(func=runs("cli_hub", "issue_command"))
    hub = commands.add_parser("hub", help="run JupyterHub with cleanroom's sign-in, spawner and pages")
    hub.add_argument("--config", help="a jupyterhub_config.py (default: the chart's)")
    hub.set_defaults(func=runs("cli_hub", "hub_command"))


def add_notebook_commands(commands: argparse._SubParsersAction[Any]) -> None:
    meter = commands.add_parser(
        "notebook-meter",
        help="the notebook pod's byte meter: proxy the single-user server, count and cap bytes to the browser",
    )
    meter.add_argument("--listen", default="0.0.0.0:8888", help="HOST:PORT the hub's proxy reaches")
    meter.add_argument(
        "--upstream", default="http://127.0.0.1:8889", help="the single-user server, on localhost only"
    )
    meter.add_argument(
        "--budget-bytes", type=int, default=None, help="bytes to the browser per window (default 64 MiB)"
    )
    meter.add_argument("--window-seconds", type=float, default=None, help="the window (default 3600)")
    meter.add_argument(
        "--report-seconds",
        type=float,
        default=600,
        help="how often the session's totals go to the audit trail",
    )
    meter.set_defaults(func=runs("cli_notebook", "meter_command"))


def add_export_commands(commands: argparse._SubParsersAction[Any]) -> None:
    export = commands.add_parser(
        "export",
        help="ask for files from your home folder to leave the workspace (the airlock), from the notebook",
        description="Creates an ExportRequest for you and this workspace through the hub (the only address a "
        "notebook reaches). The files are copied into quarantine, checked for patient data (no DICOM, no "
        "image or array of the dataset, no pseudonym or UID) and released on the hub's page once a data "
        "steward and a security officer approved.",
    )
    export.add_argument(
        "files", nargs="+", metavar="FILE", help="a file in your home folder, e.g. results/metrics.csv"
    )
    export.add_argument(
        "-j",
        "--justification",
        required=True,
        help="why these results must leave and what they hold (20+ characters)",
    )
    export.add_argument("--home", default="", help="your home folder (default: $HOME)")
    export.add_argument("--wait", type=float, default=60, help="seconds to wait for the hub's answer")
    export.set_defaults(func=runs("cli_export", "export_command"))
    decide = commands.add_parser(
        "export-decide",
        help="approve or reject an ExportRequest as a data steward or security officer (uses your kubeconfig)",
        description="Appends your decision to spec.decisions: your user name and groups as the API server "
        "authenticates you (a SelfSubjectReview), which the admission policy checks again.",
    )
    decide.add_argument("name", help="the ExportRequest")
    decide.add_argument("-n", "--namespace", required=True)
    decide.add_argument("--role", choices=["DataSteward", "SecurityOfficer"], required=True)
    verdict = decide.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true")
    verdict.add_argument("--reject", action="store_true")
    decide.add_argument("--reason", required=True, help="what you looked at, and why this verdict")
    decide.set_defaults(func=runs("cli_export", "decide_command"))
    copy = commands.add_parser(
        "airlock-copy",
        help="copy an export's files from a home folder into quarantine (the copy Job)",
        description="Reads the upload grant URL from CLEANROOM_EXPORT_GRANT_URL; needs no storage credentials.",
    )
    copy.add_argument("home", metavar="HOME")
    copy.set_defaults(func=runs("cli_export", "copy_command"))
    check = commands.add_parser(
        "airlock-check",
        help="run the disclosure checks on an export's quarantined files (the check Job)",
        description="Reads the check grant URL from CLEANROOM_EXPORT_CHECK_GRANT_URL; needs no storage "
        "credentials. Exits 75 when the store cannot be reached, 1 when the files could not be judged.",
    )
    check.set_defaults(func=runs("cli_check", "check_command"))
    reader = commands.add_parser(
        "export-outbox-reader",
        help="keep the hub's download account on the chart's bundled S3 server (its outbox only)",
        description="Creates the account in ROOT_ACCESS_KEY/ROOT_SECRET_KEY's server (versitygw) from "
        "CLEANROOM_OUTBOX_READER_ACCESS_KEY/_SECRET_KEY, the outbox bucket, and a bucket policy that lets the "
        "account get released files and nothing else; again every --every seconds.",
    )
    reader.add_argument("--endpoint", default="http://127.0.0.1:7070", help="the server (its own pod)")
    reader.add_argument("--bucket", required=True, help="the outbox bucket (exports.outboxBucket)")
    reader.add_argument("--every", type=float, default=300, help="seconds between checks")
    reader.add_argument("--once", action="store_true", help="put it in place once and exit")
    reader.set_defaults(func=runs("cli_export", "outbox_reader_command"))
