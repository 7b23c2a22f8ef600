"""`cleanroom egress-probe`: run inside a workspace's network policies, try every route out, and report.

Writes a JSON report ({"reached": [...], "blocked": [...], "settledAfter": seconds}) to stdout and to the pod's
termination message.

A network plugin programs the policies of a new pod asynchronously (kube-router on the pod's event, seconds
on a loaded node; Calico and Cilium usually faster), so the first connection of a fresh pod can get through
policies that do hold a moment later. A route counts as reached only if it still answers after the plugin
has had ``SETTLE_SECONDS``: a plugin that never enforces still shows every route reached, and one that is slow
shows how long it took.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from cleanroom.workspaces.egress import PROBE_ROUTES

TIMEOUT_SECONDS = 3.0
SETTLE_SECONDS = 45.0
RETRY_SECONDS = 2.0


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


def settled_probe(
    routes: tuple[tuple[str, str, int], ...] = PROBE_ROUTES,
    timeout: float = TIMEOUT_SECONDS,
    settle: float = SETTLE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """Probe until every route is blocked or ``settle`` seconds have passed; the last report, with how long
    the policies took to hold (``settledAfter``, None when they did not)."""
    started = clock()
    while True:
        report = probe(routes, timeout)
        waited = round(clock() - started, 1)
        if not report["reached"]:
            return {**report, "settledAfter": waited}
        if waited >= settle:
            return {**report, "settledAfter": None}
        sleep(RETRY_SECONDS)


def main(termination_log: str = "/dev/termination-log") -> int:
    report = json.dumps(settled_probe())
    print(report)
    with contextlib.suppress(OSError):
        Path(termination_log).write_text(report)
    return 0
