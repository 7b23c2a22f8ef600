"""Workspaces at scale on the local control plane, side by side with the floor.

N Workspaces are applied at once; the clock runs until every one is Ready. The floor, measured in the same
run, is the time one client takes to create the same objects directly (PVCs, Secret, NetworkPolicies, Job,
Service, Pod) and see every pod Running. Prints wall time, per-workspace p50/p95, ratio to the floor, and the
operator's CPU seconds and peak RSS (from /proc).

    make cluster-up crds && .venv/bin/python bench/workspaces.py --n 100 --n 500

Stop the `make dev` operator first (hack/stop-operator.sh); this script starts its own.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.conftest import KUBECTL, STATE, operator_env  # noqa: E402

from cleanroom.api import WorkspaceSpec, decode  # noqa: E402
from cleanroom.workspaces import WorkspaceRef, WorkspaceSettings  # noqa: E402
from cleanroom.workspaces import manifests as build  # noqa: E402

KUBECONFIG = str(STATE / "kubeconfig")
PER_NAMESPACE = 50
EXTRA_NODES = 8
# Quotas large enough for the whole run, the same for the floor and the operator.
BENCH_QUOTA = {
    "pods": "1000",
    "requests.cpu": "1000",
    "limits.cpu": "1000",
    "requests.memory": "10Ti",
    "limits.memory": "10Ti",
    "persistentvolumeclaims": "1000",
    "requests.storage": "100Ti",
}
SPEC = {
    "users": ["alice@hospital.example"],
    "purpose": "Benchmark the operator at scale on the local control plane",
    "image": "registry.example.org/cleanroom/notebook-cuda:2026.11",
    "resources": {"gpu": 0, "cpu": "10m", "memory": "64Mi", "homeStorage": "100Mi"},
}


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=stdin, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args[:3])} failed: {result.stderr[-2000:]}")
    return result.stdout


def ensure_capacity() -> None:
    """Enough simulated CPU nodes for 500 small pods (110 pods a node)."""
    nodes = []
    for index in range(EXTRA_NODES):
        nodes.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"bench-{index}",
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"kubernetes.io/os": "linux", "type": "kwok"},
                },
                "status": {
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                },
            }
        )
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes}))


def api_requests() -> collections.Counter[str]:
    """The API server's request counters so far, by verb and resource (all clients together)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        key = f"{labels.get('verb')} {labels.get('resource')}{'/' + labels['subresource'] if labels.get('subresource') else ''}"
        counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def namespaces(prefix: str, n: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range((n + PER_NAMESPACE - 1) // PER_NAMESPACE)]
    for name in names:
        kubectl("create", "namespace", name)
    return names


def ready_times(kind: str, namespaces_: list[str], n: int, started: float, timeout: float) -> list[float]:
    """Seconds from ``started`` until each object was first seen ready, polling the API server."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        for namespace in namespaces_:
            items = json.loads(kubectl("get", kind, "-n", namespace, "-o", "json"))["items"]
            for item in items:
                key = f"{namespace}/{item['metadata']['name']}"
                if key in seen:
                    continue
                if kind == "workspaces":
                    ok = any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in item.get("status", {}).get("conditions", [])
                    )
                else:
                    ok = item.get("status", {}).get("phase") == "Running" and "materialize" not in key
                if ok:
                    seen[key] = time.monotonic() - started
        time.sleep(0.5)
    if len(seen) < n:
        raise SystemExit(f"only {len(seen)} of {n} {kind} ready after {timeout}s")
    return sorted(seen.values())


def floor(n: int, snapshot: str, dataset: str) -> list[float]:
    """One client creates what the operator would, and waits for the pods."""
    names = namespaces(f"floor-{uuid.uuid4().hex[:6]}", n)
    settings = WorkspaceSettings()
    spec = decode(WorkspaceSpec, {**SPEC, "dataset": {"name": dataset}})
    documents = []
    for index in range(n):
        ref = WorkspaceRef(f"w{index}", names[index // PER_NAMESPACE], str(uuid.uuid4()), snapshot, dataset)
        objects = [
            build.build_reader_secret(ref, "https://s3.example/grant"),
            build.build_data_pvc(ref, settings),
            build.build_materializer_network_policy(ref, settings),
            build.build_materializer_job(ref, settings),
            build.build_home_pvc(ref, spec, settings),
            build.build_notebook_network_policy(ref, settings),
            build.build_service(ref, settings),
            build.build_notebook_pod(ref, spec, settings, {}),
        ]
        for item in objects:
            item["metadata"].pop("ownerReferences", None)
        documents.append(objects)
    started = time.monotonic()
    for namespace in names:
        for guard in build.build_namespace_guards(namespace, WorkspaceSettings(quota=BENCH_QUOTA)):
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump(guard))
    body = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": [o for objs in documents for o in objs]}
    )
    for attempt in range(3):
        try:
            kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=body)
            break
        except SystemExit:
            # A concurrent status write (the quota controller) can make one apply lose a race; apply is idempotent.
            if attempt == 2:
                raise
            time.sleep(1)
    times = ready_times("pods", names, n, started, timeout=900)
    # The operator's round starts on a quiet cluster: the floor's objects are gone before it begins.
    kubectl("delete", "namespace", *names, "--timeout=600s")
    return times


def with_operator(n: int, dataset: str) -> tuple[list[float], float, float]:
    names = namespaces(f"bench-{uuid.uuid4().hex[:6]}", n)
    config = Path(tempfile.mkdtemp()) / "settings.yaml"
    config.write_text(yaml.safe_dump({"quota": BENCH_QUOTA}))
    env = {
        **operator_env(KUBECONFIG),
        "CLEANROOM_WORKSPACE_CONFIG": str(config),
        "CLEANROOM_AUDIT_DIR": str(config.parent / "audit"),
        # The production default (the tests' operator_env shortens it to 3 s).
        "CLEANROOM_WORKSPACE_CLOCK_SECONDS": "300",
    }
    log = open(STATE / "bench-operator.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/cleanroom"), "operator", "--health-port", "18081", "--log-format", "json"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(4)
    workspaces = [
        {
            "apiVersion": "cleanroom.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": f"w{i}", "namespace": names[i // PER_NAMESPACE]},
            "spec": {**SPEC, "dataset": {"name": dataset}},
        }
        for i in range(n)
    ]
    started, wall_started = time.monotonic(), datetime.now(UTC)
    kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": workspaces})
    )
    peak = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(ready_times, "workspaces", names, n, started, 1200)
        while not future.done():
            peak = max(peak, rss_kib(process.pid))
            time.sleep(0.5)
        times = future.result()
    cpu = cpu_seconds(process.pid)
    if TIMELINE:
        print_timeline(names, wall_started)
    # Nothing of this round is left for the next one to see. The operator still runs while the namespaces
    # go: it removes its finalizers from the Workspaces.
    kubectl("delete", "namespace", *names, "--timeout=600s")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    return times, cpu, peak / 1024


TIMELINE = False


def print_timeline(names: list[str], started: datetime) -> None:
    """When each step of the workspaces' start happened, from the objects' own timestamps (1 s resolution)."""
    steps: dict[str, list[float]] = collections.defaultdict(list)

    def at(text: str | None) -> float | None:
        return (
            (datetime.fromisoformat(text.replace("Z", "+00:00")) - started).total_seconds() if text else None
        )

    for namespace in names:
        for job in json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json"))["items"]:
            steps["Job created"].append(at(job["metadata"]["creationTimestamp"]) or 0)
            done = at(job.get("status", {}).get("completionTime"))
            if done is not None:
                steps["Job complete"].append(done)
        for pod in json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]:
            if "materialize" in pod["metadata"]["name"]:
                continue
            steps["notebook pod created"].append(at(pod["metadata"]["creationTimestamp"]) or 0)
            for condition in pod.get("status", {}).get("conditions") or ():
                if condition["type"] in ("PodScheduled", "Ready") and condition["status"] == "True":
                    steps[f"notebook pod {condition['type']}"].append(
                        at(condition["lastTransitionTime"]) or 0
                    )
    for step, values in steps.items():
        print(
            f"      {step:28} p50 {percentile(values, 50):6.1f}  p95 {percentile(values, 95):6.1f}  max {max(values):6.1f}"
        )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="workspaces per round (repeatable)")
    parser.add_argument("--dataset", default="sample-ct", help="a Ready Dataset (make dev creates sample-ct)")
    parser.add_argument(
        "--requests", action="store_true", help="also list the API requests of the operator's round by verb"
    )
    parser.add_argument(
        "--timeline", action="store_true", help="also print when Jobs and notebook pods were created and done"
    )
    args = parser.parse_args()
    global TIMELINE
    TIMELINE = args.timeline
    dataset = json.loads(kubectl("get", "dataset", args.dataset, "-o", "json"))
    snapshot = dataset["status"]["snapshot"]["digest"]
    ensure_capacity()
    print(
        f"{'N':>5} {'floor s':>8} {'operator s':>10} {'ratio':>6} {'p50 s':>6} {'p95 s':>6} {'op CPU s':>8} "
        f"{'op peak RSS MB':>14} {'API req floor':>13} {'API req operator':>16}"
    )
    for n in args.n or [100]:
        before = api_requests()
        floor_times = floor(n, snapshot, args.dataset)
        between = api_requests()
        times, cpu, peak_mb = with_operator(n, args.dataset)
        after = api_requests()
        floor_requests, operator_requests = between - before, after - between
        print(
            f"{n:5d} {floor_times[-1]:8.1f} {times[-1]:10.1f} {times[-1] / floor_times[-1]:6.2f} "
            f"{percentile(times, 50):6.1f} {percentile(times, 95):6.1f} {cpu:8.1f} {peak_mb:14.0f} "
            f"{floor_requests.total():13d} {operator_requests.total():16d}",
            flush=True,
        )
        if args.requests:
            for key, count in operator_requests.most_common(15):
                print(f"      {count:7d} {key}  (floor {floor_requests[key]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
