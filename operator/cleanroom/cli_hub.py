"""`cleanroom token issue` (sign-in tokens from the local dev issuer) and `cleanroom hub` (JupyterHub
with cleanroom's configuration)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DEV_DIR = Path(os.environ.get("CLEANROOM_DEV_ISSUER_DIR", ".cluster/hub"))
DEV_ISSUER = os.environ.get("CLEANROOM_HUB_ISSUER", "https://login.cleanroom.local")
DEV_AUDIENCE = os.environ.get("CLEANROOM_HUB_AUDIENCE", "cleanroom-hub")
HUB_CONFIG = Path(__file__).resolve().parents[2] / "charts" / "cleanroom" / "files" / "jupyterhub_config.py"


def _issue(args: argparse.Namespace) -> int:
    from cleanroom.tokens import load_dev_issuer, write_dev_issuer

    pem = DEV_DIR / "dev-issuer.pem"
    if args.init:
        write_dev_issuer(DEV_DIR, DEV_ISSUER, DEV_AUDIENCE)
    if not pem.exists():
        print(
            f"error: no dev issuer key at {pem}; run `make dev` (or `cleanroom token issue --init ...`)",
            file=sys.stderr,
        )
        return 2
    issuer = load_dev_issuer(pem, DEV_ISSUER, DEV_AUDIENCE)
    print(issuer.issue(args.user, args.group, lifetime_seconds=args.lifetime))
    return 0


def _hub(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else HUB_CONFIG
    if not config.exists():
        print(f"error: hub configuration {config} not found; pass --config", file=sys.stderr)
        return 2
    from cleanroom.audit.writer import NoAuditSink, sink

    try:
        sink()  # chosen before serving: a hub in a cluster with no audit trail does not start
    except NoAuditSink as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    from jupyterhub.app import main as jupyterhub_main

    sys.argv = ["jupyterhub", "-f", str(config)]
    jupyterhub_main()
    return 0


def add_commands(commands: Any) -> None:
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
    issue.set_defaults(func=_issue)
    hub = commands.add_parser("hub", help="run JupyterHub with cleanroom's sign-in, spawner and pages")
    hub.add_argument("--config", help="a jupyterhub_config.py (default: the chart's)")
    hub.set_defaults(func=_hub)
