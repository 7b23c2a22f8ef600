"""Chaos: the deployed operator killed with SIGKILL at random points while 20 Workspaces in four namespaces are
created, started and stopped through the hub, started again and deleted (issue 12 item 4, issue 19's proof).
Afterwards:

- every Workspace converges to what was asked, and nothing is orphaned or made twice (notebook pods, Jobs,
  grant Secrets, volume claims);
- the audit trail (the deployed audit service, as an officer exports it) holds exactly the lifecycle that the
  API server recorded, each event once: a `workspace.created` for each create and a `workspace.deleted` for
  each delete in the API server's own audit log (its webhook's `k8s.change` events in the stack's audit
  service, .cluster/audit), a `workspace.started` for each notebook pod that became Ready and a
  `workspace.stopped` for each of those that went, as the API server's watch of pods reported them.

The notebooks run on the real node: the deployed install places every Workspace pod there (its volumes come
from a storage class that provisions on that node only). Its 2 CPUs hold the install, the sample and eight
notebooks of 100m at once (twenty of 30m were not all Ready after 7 minutes), so eight of the 20 run
at a time. Four namespaces, because the operator's quota allows 20 volume claims (10 Workspaces) in each; a
Dataset of the test's own admits them by label, and stays for the next run.

The seed of the kill schedule is printed (set CLEANROOM_CHURN_SEED to replay one).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config, watch

from cleanroom.api import find_condition
from cleanroom.audit import read_records
from cleanroom.hub.names import server_name
from tests.deployed.conftest import ALICE, STATE, Deployed, PortForward, alice_workspace, audit_rows, wait_for
from tests.deployed.hub_session import HubSession
from tests.integration.conftest import Kubectl

COUNT = 20
RUNNING = 8
NAMESPACES = 4
LABEL = "cleanroom.dev/test"
DATASET = "churn-ct"
OPERATOR = "app.kubernetes.io/name=cleanroom-operator"
LIFECYCLE = ("workspace.created", "workspace.started", "workspace.stopped", "workspace.deleted")
# The stack's own audit service, where the kube-apiserver's audit webhook delivers (hack/cluster-up.sh).
API_SERVER_TRAIL = STATE / "audit"

Key = tuple[str, str, str]  # namespace, workspace, action


def _dataset() -> dict[str, Any]:
    """The sample corpus again (hack/deployed-sample.sh uploads it), for namespaces labelled for this test."""
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": DATASET},
        "spec": {
            "description": "Deployed suite: the operator killed during churn",
            "source": {
                "s3": {
                    "endpoint": "http://cleanroom-s3.cleanroom-system.svc:7070",
                    "bucket": "raw-imaging",
                    "prefix": "sample/",
                    "credentialsSecretRef": {"namespace": "cleanroom-keys", "name": "raw-imaging-reader"},
                }
            },
            "deidentification": {
                "method": "Pseudonymize",
                "keySecretRef": {"namespace": "cleanroom-keys", "name": "site-pseudonym-key"},
            },
            "access": {
                "users": [ALICE],
                "namespaces": {"selector": {"matchLabels": {LABEL: "churn"}}},
            },
        },
    }


def _workspace(namespace: str, name: str, image: str, running: bool) -> dict[str, Any]:
    body = alice_workspace(
        name, image, "Deployed suite: churn while the operator is killed", "100m", "512Mi", running
    )
    body["metadata"]["namespace"] = namespace
    body["metadata"]["labels"] = {LABEL: "churn"}
    body["spec"]["dataset"] = {"name": DATASET}
    body["spec"]["resources"]["homeStorage"] = "100Mi"
    return body


def _spawn(hub: HubSession, namespace: str, name: str) -> None:
    """Ask the hub to start the Workspace's server, as the Start button does; the Workspace's status says
    when it runs. The port-forward to the proxy drops a connection now and then under load: asked again."""
    url = f"{hub.base}/hub/spawn/{hub.user}/{server_name(namespace, name)}"
    for attempt in range(3):
        try:
            response = hub.session.get(url, timeout=300)
        except requests.ConnectionError:
            if attempt == 2:
                raise
            time.sleep(2)
            continue
        assert response.status_code == 200, f"starting {namespace}/{name}: {response.status_code}"
        return


def _start_all(hub: HubSession, workspaces: list[tuple[str, str]], chaos: Chaos, within: float) -> None:
    """Start them through the hub at once, as alice's Start buttons do (a notebook's server needs the session
    the hub gives it), with a kill at a random moment meanwhile."""
    with ThreadPoolExecutor(max_workers=len(workspaces)) as pool:
        starts = [pool.submit(_spawn, hub, ns, name) for ns, name in workspaces]
        chaos.kill_within(within)
        for future in starts:
            future.result()


# --- the kills ---------------------------------------------------------------------------------------------


def _pids_of_pod(uid: str) -> list[int]:
    """The processes of a pod's containers on this machine (the real node's), found by the pod's cgroup;
    the pause container's is left alone."""
    marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(mark in cgroup for mark in marks) and not command.startswith(b"/pause"):
            found.append(int(entry.name))
    return found


def _kill_operator(kubectl: Kubectl, namespace: str, replace: bool) -> str:
    """SIGKILL the operator's processes (no handler runs, nothing is flushed); with ``replace``, also delete
    its pod at once, so a new pod starts (else its container restarts in place). What was done, for the log."""
    pods = kubectl.get("pods", "-n", namespace, "-l", OPERATOR)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if not live:
        return "no operator pod to kill"
    pod = live[0]["metadata"]
    pids = _pids_of_pod(pod["uid"])
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if replace or not pids:
        kubectl.run(
            "delete", "pod", "-n", namespace, pod["name"], "--grace-period=0", "--force", "--wait=false"
        )
    return f"SIGKILL {pod['name']} pids {pids}" + (" and its pod deleted" if replace or not pids else "")


@dataclass
class Chaos:
    """Kills at random moments, each SIGKILL; every other one also replaces the pod (a container killed
    again and again in place would wait out the kubelet's growing restart back-off)."""

    kubectl: Kubectl
    namespace: str
    rng: random.Random
    log: list[str] = field(default_factory=list)
    last: float = 0.0

    def kill(self) -> None:
        done = _kill_operator(self.kubectl, self.namespace, replace=len(self.log) % 2 == 1)
        self.last = time.monotonic()
        self.log.append(done)
        print(f"kill {len(self.log)}: {done}")

    def kill_within(self, seconds: float) -> None:
        time.sleep(self.rng.uniform(0, seconds))
        self.kill()


# --- the API server's record -------------------------------------------------------------------------------


class NotebookRuns(threading.Thread):
    """The API server's record of notebook pods in the test's namespaces, from a watch begun before any
    Workspace: per pod, whether it became Ready (a run started) and whether it went (a run stopped)."""

    def __init__(self, kubeconfig: str, namespaces: list[str]) -> None:
        super().__init__(daemon=True)
        self.api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        self.namespaces = set(namespaces)
        self.pods: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failure = ""
        self.version = self.api.list_pod_for_all_namespaces(
            label_selector="app.kubernetes.io/component=notebook"
        ).metadata.resource_version

    def run(self) -> None:
        while not self.stopping.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.api.list_pod_for_all_namespaces,
                    label_selector="app.kubernetes.io/component=notebook",
                    resource_version=self.version,
                    timeout_seconds=30,
                ):
                    if event["type"] == "ERROR":
                        self.failure = f"the pod watch ended: {event['raw_object']}"
                        return
                    self._seen(event["type"], event["object"])
                    if self.stopping.is_set():
                        stream.stop()
            except client.ApiException as error:
                # 410 Gone: the record has a gap, and the comparison would be with an incomplete record.
                self.failure = f"the pod watch ended: {error.status} {error.reason}"
                return

    def _seen(self, kind: str, pod: Any) -> None:
        meta = pod.metadata
        self.version = meta.resource_version
        if meta.namespace not in self.namespaces or meta.name.endswith("-egress-probe"):
            return
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        with self.lock:
            run = self.pods.setdefault(
                meta.uid,
                {
                    "namespace": meta.namespace,
                    "workspace": (meta.labels or {}).get("cleanroom.dev/workspace", ""),
                },
            )
            run["ready"] = run.get("ready", False) or ready
            run["gone"] = run.get("gone", False) or kind == "DELETED" or meta.deletion_timestamp is not None

    def record(self) -> Counter[Key]:
        with self.lock:
            runs = [dict(r) for r in self.pods.values()]
        found: Counter[Key] = Counter()
        for run in runs:
            if run["ready"]:
                found[(run["namespace"], run["workspace"], "workspace.started")] += 1
                if run["gone"]:
                    found[(run["namespace"], run["workspace"], "workspace.stopped")] += 1
        return found


def api_server_writes(namespaces: list[str]) -> Counter[Key]:
    """Workspace creations and deletions that the API server's audit log holds for these namespaces: each
    `k8s.change` of a create answered 201 or a delete answered 200 (reason: VERB URI -> CODE)."""
    found: Counter[Key] = Counter()
    for record in read_records(API_SERVER_TRAIL):
        event = record["event"]
        resources = event.get("resources") or {}
        if event["action"] != "k8s.change" or resources.get("namespace") not in namespaces:
            continue
        words = (event.get("reason") or "").split(" ")
        if len(words) != 4:
            continue
        verb, uri, _, code = words
        path = uri.split("?")[0].rstrip("/").split("/")
        if "workspaces" not in path or path[-1] == "status":
            continue
        if verb == "create" and code == "201":
            found[(resources["namespace"], resources["workspace"], "workspace.created")] += 1
        elif verb == "delete" and code == "200":
            found[(resources["namespace"], resources["workspace"], "workspace.deleted")] += 1
    return found


def operator_trail(page: requests.Session, namespaces: list[str]) -> Counter[Key]:
    """The lifecycle events of these namespaces' Workspaces in the deployed audit service's trail, by
    workspace and action (an event recorded twice under two ids counts twice)."""
    found: Counter[Key] = Counter()
    for row in audit_rows(page, action="workspace."):
        resources = json.loads(row["resources"])
        if row["action"] in LIFECYCLE and resources.get("namespace") in namespaces:
            found[(resources["namespace"], resources["workspace"], row["action"])] += 1
    return found


def difference(expected: Counter[Key], found: Counter[Key]) -> list[str]:
    return [
        f"{ns}/{ws} {action}: API server {expected[(ns, ws, action)]}, trail {found[(ns, ws, action)]}"
        for ns, ws, action in sorted(set(expected) | set(found))
        if expected[(ns, ws, action)] != found[(ns, ws, action)]
    ]


# --- the test ----------------------------------------------------------------------------------------------


@pytest.fixture
def churn_namespaces(kubectl: Kubectl, deployed: Deployed) -> Iterator[list[str]]:
    """Four namespaces where alice may manage Workspaces, admitted by a Dataset of their own; all removed
    afterwards."""
    run = uuid.uuid4().hex[:4]
    names = [f"churn-{run}-{i}" for i in range(NAMESPACES)]
    kubectl.apply(_dataset())
    for ns in names:
        kubectl.run("create", "namespace", ns)
        kubectl.run("label", "namespace", ns, f"{LABEL}=churn")
        kubectl.run(
            "-n", ns, "create", "role", "cleanroom-modeller", "--verb=get,list,watch,create,update,patch,delete",
            "--resource=workspaces.cleanroom.dev",
        )  # fmt: skip
        kubectl.run(
            "-n", ns, "create", "rolebinding", "cleanroom-modellers", "--role=cleanroom-modeller", f"--user={ALICE}"
        )  # fmt: skip
    kubectl.run("wait", "--for=condition=Ready", f"dataset/{DATASET}", "--timeout=110s")
    try:
        yield names
    finally:
        for ns in names:
            kubectl.run("delete", "workspaces", "--all", "-n", ns, "--wait=false", check=False)
            kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.slow
def test_operator_killed_during_churn_converges_and_the_trail_matches_the_api_servers_record(
    kubectl: Kubectl,
    kubeconfig: str,
    deployed: Deployed,
    sample: dict[str, Any],
    churn_namespaces: list[str],
    audit_page: requests.Session,
    proxy: PortForward,
) -> None:
    seed = int(os.environ.get("CLEANROOM_CHURN_SEED") or time.time_ns() % 1_000_000)
    print(f"churn seed {seed} (CLEANROOM_CHURN_SEED={seed} replays the kill schedule)")
    chaos = Chaos(kubectl, deployed.namespace, random.Random(seed))
    run = churn_namespaces[0].split("-")[1]
    workspaces = [(churn_namespaces[i % NAMESPACES], f"churn-{run}-{i:02d}") for i in range(COUNT)]
    runs = NotebookRuns(kubeconfig, churn_namespaces)
    runs.start()
    began = time.monotonic()

    def phases() -> dict[tuple[str, str], tuple[str, str, str]]:
        """Each Workspace's phase, Ready status and Ready reason: message."""
        found = {}
        for ns in churn_namespaces:
            for body in kubectl.get("workspaces", "-n", ns)["items"]:
                status = body.get("status") or {}
                ready = find_condition(status.get("conditions"), "Ready") or {}
                found[(ns, body["metadata"]["name"])] = (
                    str(status.get("phase", "")),
                    str(ready.get("status", "")),
                    f"{ready.get('reason', '')}: {str(ready.get('message', ''))[:160]}",
                )
        return found

    def settle(
        want: dict[tuple[str, str], str], gone: list[tuple[str, str]], timeout: float, what: str
    ) -> None:
        """Wait until each Workspace in ``want`` is in its phase (Running also Ready) and those in ``gone``
        are gone; else fail with where each one that is not got to, and its pods."""
        last: dict[tuple[str, str], tuple[str, str, str]] = {}

        def done() -> bool:
            last.clear()
            last.update(phases())
            return not (set(gone) & set(last)) and all(
                last.get(w, ("", "", ""))[:2] == ((phase, "True") if phase == "Running" else (phase, "False"))
                for w, phase in want.items()
            )

        try:
            wait_for(done, timeout=timeout, interval=3, what=what)
        except AssertionError:
            off = {
                f"{ns}/{n}": last.get((ns, n))
                for (ns, n), phase in want.items()
                if last.get((ns, n), ("",))[0] != phase
            }
            pods = [
                f"{p['metadata']['namespace']}/{p['metadata']['name']} {p['status'].get('phase')} "
                + " ".join(f"{c['type']}={c['status']}" for c in p["status"].get("conditions") or [])
                for ns in churn_namespaces
                for p in kubectl.get("pods", "-n", ns)["items"]
            ]
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; not there: {off}; "
                f"still present: {set(gone) & set(last)}; pods: {pods}"
            ) from None

    # 1. Twenty created by alice, a few at a time, a kill meanwhile; eight started through the hub, a kill while
    # they start. (Eight notebooks of 100m CPU fit the real node beside the install and the sample.)
    first, idle = workspaces[:RUNNING], workspaces[RUNNING:]

    def create() -> None:
        for ns, name in workspaces:
            kubectl.apply(_workspace(ns, name, deployed.notebook_image, False), "--as", ALICE)
            time.sleep(chaos.rng.uniform(0, 1))

    creating = threading.Thread(target=create)
    creating.start()
    chaos.kill_within(15)
    creating.join()
    hub = HubSession.sign_in(proxy.url, ALICE, ("sample-ai",))
    _start_all(hub, first, chaos, 20)
    settle({**{w: "Running" for w in first}, **{w: "Stopped" for w in idle}}, [], 360, "eight running")
    print(f"{RUNNING} running, {len(idle)} stopped after {time.monotonic() - began:.0f} s")

    # 2. Half the running stopped (a kill among the stops); five deleted, two of them running, just after a
    # kill (while the next operator starts: deletions no watch sees); then two of the stopped and two never
    # started are started (a kill while they start).
    stop, deleted, still = first[:4], first[4:6] + idle[:3], first[6:]
    killer = threading.Thread(target=chaos.kill_within, args=(6,))
    killer.start()
    for ns, name in stop:
        assert hub.stop(ns, name).status_code == 200
    killer.join()
    chaos.kill()
    for ns in churn_namespaces:
        names = [name for n, name in deleted if n == ns]
        if names:
            kubectl.run("delete", "workspace", *names, "-n", ns, "--as", ALICE, "--wait=false")
    settle({w: "Stopped" for w in stop}, [], 180, "the four stopped")
    again = stop[:2] + idle[3:5]
    _start_all(hub, again, chaos, 10)
    running = still + again
    stopped = stop[2:] + idle[5:]
    settle(
        {**{w: "Running" for w in running}, **{w: "Stopped" for w in stopped}},
        deleted,
        300,
        "every Workspace converged after the last kill",
    )
    print(
        f"converged {time.monotonic() - chaos.last:.0f} s after the last of {len(chaos.log)} kills; "
        f"{time.monotonic() - began:.0f} s in all"
    )

    # 3. Exactly one of each object per Workspace that ever started and is kept; none for the deleted ones
    # (they go by owner references: the garbage collector, within seconds) nor for those never started.
    made = running + stop[2:]

    def owned(kind: str, component: str = "") -> Counter[tuple[str, str]]:
        selector = "cleanroom.dev/workspace" + (
            f",app.kubernetes.io/component={component}" if component else ""
        )
        return Counter(
            (ns, i["metadata"]["labels"]["cleanroom.dev/workspace"])
            for ns in churn_namespaces
            for i in kubectl.get(kind, "-n", ns, "-l", selector)["items"]
            if not i["metadata"].get("deletionTimestamp") and "egress-probe" not in i["metadata"]["name"]
        )

    def grants() -> Counter[tuple[str, str]]:
        return Counter(
            (ns, s["metadata"]["name"].removeprefix("ws-").removesuffix("-reader"))
            for ns in churn_namespaces
            for s in kubectl.get("secrets", "-n", ns)["items"]
            if s["metadata"]["name"].startswith("ws-") and s["metadata"]["name"].endswith("-reader")
        )

    expected_objects = {
        "notebook pods": Counter(running),
        "jobs": Counter(made),
        "volume claims": Counter({w: 2 for w in made}),
        "grant secrets": Counter(made),
    }
    seen: dict[str, Counter[tuple[str, str]]] = {}

    def objects_settled() -> bool:
        seen.update(
            {
                "notebook pods": owned("pods", "notebook"),
                "jobs": owned("jobs"),
                "volume claims": owned("persistentvolumeclaims"),
                "grant secrets": grants(),
            }
        )
        return seen == expected_objects

    try:
        wait_for(objects_settled, timeout=120, interval=3, what="one set of objects per Workspace")
    except AssertionError:
        wrong = {
            k: (dict(seen[k] - v), dict(v - seen[k])) for k, v in expected_objects.items() if seen[k] != v
        }
        raise AssertionError(f"objects (extra, missing) by kind: {wrong}") from None

    # 4. The trail holds what the API server recorded, each once. The writers deliver from their outboxes
    # (a killed operator's outbox on its volume included) and the webhook in batches: wait for both.
    assert not runs.failure, runs.failure
    expected: Counter[Key] = Counter()
    found: Counter[Key] = Counter()

    def agree() -> bool:
        expected.clear()
        expected.update(api_server_writes(churn_namespaces) + runs.record())
        found.clear()
        found.update(operator_trail(audit_page, churn_namespaces))
        return expected == found

    try:
        wait_for(agree, timeout=120, interval=5, what="the trail to hold the API server's record")
    except AssertionError:
        raise AssertionError(
            "the audit trail and the API server's record differ:\n" + "\n".join(difference(expected, found))
        ) from None
    finally:
        runs.stopping.set()
    # The API server's record is the test's ground truth: it must hold what the test did.
    actions = Counter(action for _, _, action in expected.elements())
    assert actions == {
        "workspace.created": COUNT,
        "workspace.started": RUNNING + len(again),
        "workspace.stopped": len(stop) + 2,
        "workspace.deleted": len(deleted),
    }, actions
    print(f"API server and trail agree: {dict(actions)}; kills: {chaos.log}")
