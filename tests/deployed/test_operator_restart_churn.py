"""The operator pod killed (SIGKILL, no grace) while 20 Workspaces are started, stopped and deleted through
the hub: every Workspace converges to what was asked, and nothing is orphaned or made twice (Jobs, pods,
Secrets, volumes)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cleanroom.api import find_condition
from tests.deployed.conftest import ALICE, SAMPLE_NS, Deployed, PortForward, alice_workspace, wait_for
from tests.deployed.hub_session import HubSession
from tests.integration.conftest import Kubectl

COUNT = 20


def _workspace(name: str, image: str) -> dict[str, Any]:
    return alice_workspace(
        name,
        image,
        "Deployed suite: churn while the operator is killed",
        "30m",
        "256Mi",
        False,
        **{"cleanroom.dev/test": "churn"},
    )


def _kill_operator(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run(
        "delete",
        "pod",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/name=cleanroom-operator",
        "--grace-period=0",
        "--force",
        "--wait=false",
        check=False,
    )


def _phase(kubectl: Kubectl, name: str) -> tuple[str, str]:
    body = kubectl.get("workspace", name, "-n", SAMPLE_NS)
    ready = find_condition((body.get("status") or {}).get("conditions"), "Ready") or {}
    return str((body.get("status") or {}).get("phase", "")), str(ready.get("status", ""))


@pytest.mark.slow
def test_workspaces_converge_and_nothing_is_orphaned_when_the_operator_is_killed_during_churn(
    kubectl: Kubectl, deployed: Deployed, proxy: PortForward, sample: dict[str, Any]
) -> None:
    run = uuid.uuid4().hex[:4]
    names = [f"churn-{run}-{i:02d}" for i in range(COUNT)]
    for name in names:
        kubectl.apply(_workspace(name, deployed.notebook_image), "--as", ALICE)
    hub = HubSession.sign_in(proxy.url, ALICE, ("sample-ai",))
    try:
        # Start all of them through the hub, and kill the operator twice while they start.
        with ThreadPoolExecutor(max_workers=COUNT) as pool:
            starts = [pool.submit(hub.start, SAMPLE_NS, name, 600) for name in names]
            for _ in range(2):
                time.sleep(15)
                _kill_operator(kubectl, deployed.namespace)
            for future in starts:
                future.result()
        # Stop half, delete a quarter, and kill it again in the middle.
        stopped, deleted = names[: COUNT // 2], names[COUNT // 2 : COUNT // 2 + COUNT // 4]
        running = names[COUNT // 2 + COUNT // 4 :]
        with ThreadPoolExecutor(max_workers=COUNT) as pool:
            stops = [pool.submit(hub.stop, SAMPLE_NS, name) for name in stopped]
            _kill_operator(kubectl, deployed.namespace)
            for future in stops:
                assert future.result().status_code == 200
        kubectl.run("delete", "workspace", "-n", SAMPLE_NS, *deleted, "--wait=false")
        _kill_operator(kubectl, deployed.namespace)

        wait_for(
            lambda: (
                all(_phase(kubectl, n) == ("Running", "True") for n in running)
                and all(_phase(kubectl, n)[0] == "Stopped" for n in stopped)
            ),
            timeout=600,
            interval=3,
            what="every Workspace to converge after the last kill",
        )
        wait_for(
            lambda: (
                not (
                    set(deleted)
                    & {w["metadata"]["name"] for w in kubectl.get("workspaces", "-n", SAMPLE_NS)["items"]}
                )
            ),
            timeout=120,
            what="the deleted Workspaces gone",
        )

        # Exactly one of each object per Workspace that should have it; none for the deleted ones.
        def owners(kind: str, component: str = "") -> Counter[str]:
            selector = "cleanroom.dev/workspace" + (
                f",app.kubernetes.io/component={component}" if component else ""
            )
            items = kubectl.get(kind, "-n", SAMPLE_NS, "-l", selector)["items"]
            return Counter(
                i["metadata"]["labels"]["cleanroom.dev/workspace"]
                for i in items
                if i["metadata"]["labels"]["cleanroom.dev/workspace"].startswith(f"churn-{run}")
                and not i["metadata"].get("deletionTimestamp")
                and "egress-probe" not in i["metadata"]["name"]
            )

        def secrets() -> Counter[str]:
            return Counter(
                s["metadata"]["name"].removeprefix("ws-").removesuffix("-reader")
                for s in kubectl.get("secrets", "-n", SAMPLE_NS)["items"]
                if s["metadata"]["name"].startswith(f"ws-churn-{run}")
                and s["metadata"]["name"].endswith("-reader")
            )

        kept = running + stopped

        def settled() -> dict[str, Counter[str]] | None:
            seen = {
                "notebook pods": owners("pods", "notebook"),
                "jobs": owners("jobs"),
                "volume claims": owners("persistentvolumeclaims"),
                "grant secrets": secrets(),
            }
            expected = {
                "notebook pods": Counter(running),
                "jobs": Counter(kept),
                "volume claims": Counter({n: 2 for n in kept}),
                "grant secrets": Counter(kept),
            }
            return seen if seen == expected else None

        # Deleted Workspaces' objects go by owner references (the garbage collector), so this settles shortly.
        wait_for(
            settled,
            timeout=180,
            interval=3,
            what="exactly one set of objects per Workspace, none for the deleted",
        )
    finally:
        kubectl.run(
            "delete",
            "workspaces",
            "-n",
            SAMPLE_NS,
            "-l",
            "cleanroom.dev/test=churn",
            "--wait=false",
            check=False,
        )
