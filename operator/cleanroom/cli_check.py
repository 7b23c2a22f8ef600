"""`cleanroom airlock-check`: the check Job, which runs the disclosure checks on an export's quarantined
files (`airlock.checker`)."""

from __future__ import annotations

import argparse
import os
import sys


def check_command(args: argparse.Namespace) -> int:
    from cleanroom.airlock.checker import (
        CHECK_GRANT_VARIABLE,
        UNREACHABLE_EXIT,
        CheckerStopped,
        StoreUnreachable,
        check_quarantine,
    )

    url = os.environ.get(CHECK_GRANT_VARIABLE, "")
    if not url:
        print(f"error: {CHECK_GRANT_VARIABLE} is not set (the export's check Secret)", file=sys.stderr)
        return 2
    try:
        document = check_quarantine(url, os.environ.get("CLEANROOM_SNAPSHOT_CA_BUNDLE", ""))
    except StoreUnreachable as error:
        print(str(error), file=sys.stderr)
        return UNREACHABLE_EXIT
    except CheckerStopped as error:
        # The last line is the pod's termination message: the operator quotes it on the ExportRequest.
        print(str(error), file=sys.stderr)
        return 1
    for check in document["checks"]:
        print(f"{check['name']}: {'passed' if check['passed'] else 'failed'}")
    return 0
