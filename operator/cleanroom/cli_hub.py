"""`cleanroom token issue` (sign-in tokens from the local dev issuer) and `cleanroom hub` (JupyterHub
with cleanroom's configuration)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEV_DIR = Path(os.environ.get("CLEANROOM_DEV_ISSUER_DIR", ".cluster/hub"))
DEV_ISSUER = os.environ.get("CLEANROOM_HUB_ISSUER", "https://login.cleanroom.local")
DEV_AUDIENCE = os.environ.get("CLEANROOM_HUB_AUDIENCE", "cleanroom-hub")
HUB_CONFIG = Path(__file__).resolve().parents[2] / "charts" / "cleanroom" / "files" / "jupyterhub_config.py"


def issue_command(args: argparse.Namespace) -> int:
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


def hub_command(args: argparse.Namespace) -> int:
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
