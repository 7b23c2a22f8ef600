"""`cleanroom export` (a modeller, in the notebook), `cleanroom export-decide` (an approver, with kubectl's
credentials) and `cleanroom airlock-copy` (the copy Job)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def export_command(args: argparse.Namespace) -> int:
    from cleanroom.notebook.exports import read_answer, refusals, write_request

    home = Path(args.home or os.environ.get("HOME", "."))
    # The server checks again (the spool is the kernel's to write); here the modeller hears at once.
    problems = refusals(home, list(args.files), args.justification)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    ident = write_request(home, list(args.files), args.justification.strip())
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        answer = read_answer(home, ident)
        if answer is not None:
            return _report(answer)
        time.sleep(0.5)
    print(
        "error: no answer from the notebook server in time; is this a cleanroom workspace? "
        "(the request stays queued and is sent when the server runs)",
        file=sys.stderr,
    )
    return 1


def _report(answer: dict[str, Any]) -> int:
    if answer.get("error"):
        print(f"error: the hub refused the export: {answer['error']}", file=sys.stderr)
        return 1
    print(
        f"Export requested: {answer.get('name')} (namespace {answer.get('namespace')}).\n"
        "Its files are copied into quarantine and checked; once a data steward and a security officer have "
        "approved it, download it from your workspaces page on the hub."
    )
    return 0


def decide_command(args: argparse.Namespace) -> int:
    import kubernetes

    from cleanroom._clients.kube import api_client, custom_objects
    from cleanroom.api import EXPORT_REQUESTS, GROUP, VERSION

    review: Any = kubernetes.client.AuthenticationV1Api(api_client()).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview()
    )
    user = review.status.user_info
    # Every group the API server puts the approver in: admission admits no other, and the operator counts
    # the decision when the role's group is among them.
    groups = list(user.groups or [])
    decision = {
        "by": user.username,
        "groups": groups,
        "role": args.role,
        "verdict": "Approve" if args.approve else "Reject",
        "reason": args.reason,
    }
    current: Any = custom_objects().get_namespaced_custom_object(
        GROUP, VERSION, args.namespace, EXPORT_REQUESTS, args.name
    )
    path = "/spec/decisions/-" if current["spec"].get("decisions") else "/spec/decisions"
    value: Any = decision if path.endswith("-") else [decision]
    patch = [{"op": "add", "path": path, "value": value}]
    try:
        # A JSON patch that adds one entry: two approvers deciding at once each add theirs.
        custom_objects().patch_namespaced_custom_object(
            GROUP,
            VERSION,
            args.namespace,
            EXPORT_REQUESTS,
            args.name,
            patch,
            _content_type="application/json-patch+json",
        )
    except kubernetes.client.ApiException as error:
        message = json.loads(error.body or "{}").get("message", error.reason) if error.body else error.reason
        print(f"error: {message}", file=sys.stderr)
        return 1
    print(f"{decision['verdict']} recorded on {args.namespace}/{args.name} as {user.username} ({args.role})")
    return 0


def copy_command(args: argparse.Namespace) -> int:
    from cleanroom.airlock.copy import UPLOAD_GRANT_VARIABLE, CopyRefused, copy_to_quarantine

    url = os.environ.get(UPLOAD_GRANT_VARIABLE, "")
    if not url:
        print(f"error: {UPLOAD_GRANT_VARIABLE} is not set (the export's upload Secret)", file=sys.stderr)
        return 2
    try:
        copied = copy_to_quarantine(url, Path(args.home), os.environ.get("CLEANROOM_SNAPSHOT_CA_BUNDLE", ""))
    except (CopyRefused, OSError, ValueError) as error:
        # The last line is the pod's termination message: the operator puts it on the ExportRequest.
        print(str(error), file=sys.stderr)
        return 1
    for item in copied:
        print(f"{item.path}: {item.size} bytes, {item.digest}")
    return 0


def outbox_reader_command(args: argparse.Namespace) -> int:
    import logging

    from cleanroom.airlock.outbox_reader import BundledStore, keep_outbox_reader

    names = (
        "ROOT_ACCESS_KEY",
        "ROOT_SECRET_KEY",
        "CLEANROOM_OUTBOX_READER_ACCESS_KEY",
        "CLEANROOM_OUTBOX_READER_SECRET_KEY",
    )
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        print(f"error: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    root_access, root_secret, access, secret = (os.environ[n] for n in names)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    store = BundledStore(args.endpoint, root_access, root_secret)
    keep_outbox_reader(store, args.bucket, access, secret, every=args.every, once=args.once)
    return 0
