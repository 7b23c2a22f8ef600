"""`cleanroom notebook-meter`: the notebook pod's byte meter (`notebook.meter_server`), run by the notebook
image in a container of its own. CLEANROOM_METER_STATE names its state file, on a volume only the meter's
container mounts (the operator's pod sets it); unset, a restarted meter learns its spent budget from the
hub alone."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from cleanroom.notebook.meter import DEFAULT_BUDGET_BYTES, DEFAULT_WINDOW_SECONDS, Budget
from cleanroom.notebook.meter_server import serve


def meter_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        budget = Budget(
            limit=DEFAULT_BUDGET_BYTES if args.budget_bytes is None else args.budget_bytes,
            window=DEFAULT_WINDOW_SECONDS if args.window_seconds is None else args.window_seconds,
        )
        state_file = os.environ.get("CLEANROOM_METER_STATE", "")
        asyncio.run(serve(args.listen, args.upstream, budget, args.report_seconds, state_file))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
