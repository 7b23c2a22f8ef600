"""`cleanroom egress-probe`: run inside a workspace's network policies, try every route out, and report.

Writes a JSON report ({"reached": [...], "blocked": [...]}) to stdout and to the pod's termination message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from cleanroom.workspaces.egress import PROBE_ROUTES

TIMEOUT_SECONDS = 3.0


def try_route(name: str, host: str, port: int, timeout: float = TIMEOUT_SECONDS) -> bool:
    """Whether the route works: a DNS answer for the DNS route, a TCP connection for the others."""
    host = os.path.expandvars(host)
    if host.startswith("$"):
        return False
    try:
        if name == "dns":
            socket.setdefaulttimeout(timeout)
            socket.getaddrinfo(host, port)
            return True
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe(
    routes: tuple[tuple[str, str, int], ...] = PROBE_ROUTES, timeout: float = TIMEOUT_SECONDS
) -> dict[str, list[str]]:
    report: dict[str, list[str]] = {"reached": [], "blocked": []}
    for name, host, port in routes:
        report["reached" if try_route(name, host, port, timeout) else "blocked"].append(name)
    return report


def main(termination_log: str = "/dev/termination-log") -> int:
    report = json.dumps(probe())
    print(report)
    with contextlib.suppress(OSError):
        Path(termination_log).write_text(report)
    return 0
