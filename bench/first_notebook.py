"""Time to first notebook: a Workspace started through the hub (spec.running set true by the spawner) until
JupyterLab answers 200 through the proxy. What a modeller waits for after pressing Start.

Two flows, measured in the same run:
- deployed: the chart's pods on the local stack's real node (hack/deploy.sh): the materializer Job copies and
  verifies the snapshot, the notebook pod starts, JupyterLab answers through the chart's proxy;
- kwok (the baseline the earlier tests used): the operator and hub as local processes, the pod simulated, the
  session a local process over a local copy of the snapshot.

    .venv/bin/python bench/first_notebook.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deployed.conftest import SAMPLE_NS, PortForward  # noqa: E402
from tests.deployed.hub_session import HubSession  # noqa: E402
from tests.integration.conftest import STATE, Kubectl, OperatorProcess  # noqa: E402

ALICE = "alice@hospital.example"


def workspace(name: str, namespace: str, dataset: str, image: str, created_by: str) -> dict[str, Any]:
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"cleanroom.dev/created-by": created_by},
        },
        "spec": {
            "dataset": {"name": dataset},
            "users": [ALICE],
            "purpose": "bench/first_notebook.py",
            "image": image,
            "resources": {"gpu": 0, "cpu": "500m", "memory": "512Mi", "homeStorage": "1Gi"},
            "running": False,
        },
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_starts(
    kubectl: Kubectl,
    hub_url: str,
    namespace: str,
    dataset: str,
    image: str,
    runs: int,
    issuer: Any = None,
    creator: str = ALICE,
) -> list[float]:
    """Each run: a stopped Workspace for alice applied by `creator` (impersonated unless it is the admin the
    kubeconfig authenticates), then timed from alice's Start in the hub to JupyterLab's 200."""
    hub = HubSession.sign_in(hub_url, ALICE, issuer=issuer)
    as_creator = ("--as", creator) if creator == ALICE else ()
    seconds = []
    for index in range(runs):
        name = f"bench-first-{uuid.uuid4().hex[:5]}"
        kubectl.apply(workspace(name, namespace, dataset, image, creator), *as_creator)
        started = time.monotonic()
        hub.start(namespace, name, timeout=600)
        seconds.append(time.monotonic() - started)
        print(f"  run {index + 1}: {seconds[-1]:.1f} s", file=sys.stderr)
        hub.stop(namespace, name)
        kubectl.run(
            "delete", "workspace", name, "-n", namespace, "--wait=true", "--timeout=120s", check=False
        )
    return seconds


def deployed(kubectl: Kubectl, runs: int) -> list[float]:
    subprocess.run([str(ROOT / "hack/deploy.sh")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(ROOT / "hack/deployed-sample.sh")], check=True, stdout=subprocess.DEVNULL)
    env = dict(
        line.split("=", 1) for line in (STATE / "deployed.env").read_text().splitlines() if "=" in line
    )
    forward = PortForward(kubectl.kubeconfig, env["DEPLOYED_NAMESPACE"], "svc/cleanroom-proxy-public", 80)
    try:
        return time_starts(kubectl, forward.url, SAMPLE_NS, "sample-ct", env["DEPLOYED_IMAGE_NOTEBOOK"], runs)
    finally:
        forward.close()


def simulated(kubectl: Kubectl, runs: int) -> list[float]:
    """The same flow with local processes on kwok nodes (the deployed operator is scaled to 0 meanwhile): a
    Dataset of the same corpus on the local S3 server, ingested by the local operator."""
    from tests.integration.hub_process import Hub
    from tests.integration.test_dataset_ingest import dataset_manifest, make_secrets, upload
    from tests.integration.test_workspaces import EVERY_NAMESPACE, requester

    subprocess.run([str(ROOT / "hack/stop-operator.sh")], check=True)
    operator = OperatorProcess(kubectl.kubeconfig, STATE / "bench-operator.log")
    run = uuid.uuid4().hex[:5]
    namespace, secrets, dataset = f"bench-{run}", f"bench-keys-{run}", f"bench-kwok-{run}"
    for name in (namespace, secrets):
        kubectl.run("create", "namespace", name)
    corpus = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    sys.path.insert(0, str(ROOT / "hack"))
    from sample_corpus import build  # the same sample corpus as the deployed flow

    for key, data in build().items():
        (corpus / key).parent.mkdir(parents=True, exist_ok=True)
        (corpus / key).write_bytes(data)
    upload(corpus, "raw-imaging", f"{dataset}/")
    make_secrets(kubectl, secrets, b"k" * 32)
    body = dataset_manifest(dataset, secrets, "raw-imaging", f"{dataset}/")
    # As the integration suite's Dataset (tests/integration/test_workspaces.py): the admin who creates the
    # Workspaces is a user too, since the operator builds only what a listed user created.
    body["spec"]["access"] = {"users": [ALICE, requester()], "namespaces": {"selector": EVERY_NAMESPACE}}
    kubectl.apply(body)
    kubectl.wait_for(
        lambda d: any(
            c["type"] == "Ready" and c["status"] == "True" for c in d.get("status", {}).get("conditions", [])
        ),
        "dataset",
        dataset,
        timeout=300,
    )
    hub = Hub(kubectl.kubeconfig, Path(tempfile.mkdtemp(prefix="bench-hub-")))
    try:
        hub.wait_healthy()
        return time_starts(
            kubectl,
            hub.url,
            namespace,
            dataset,
            "registry.example.org/cleanroom/notebook-cuda:2026.11",
            runs,
            issuer=hub.issuer,
            # As the integration suite does (tests/integration/test_hub.py): the Workspaces are the cluster
            # admin's, in a namespace of the bench's own where alice holds no RBAC (she needs none: the hub
            # starts them for her as a listed user), and stop-operator.sh has lifted the writers' bindings.
            creator=requester(),
        )
    finally:
        hub.stop()
        operator.stop()
        kubectl.run("delete", "dataset", dataset, "--wait=false", check=False)
        kubectl.run("delete", "namespace", namespace, secrets, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kubectl = Kubectl(str(STATE / "kubeconfig"))
    print("deployed (real node):", file=sys.stderr)
    real = deployed(kubectl, args.runs)
    print("kwok (local processes):", file=sys.stderr)
    try:
        fake = simulated(kubectl, args.runs)
    finally:  # the deployed operator and the writers' bindings back, whatever became of the kwok half
        subprocess.run([str(ROOT / "hack/deploy.sh")], check=True, stdout=subprocess.DEVNULL)
    print("| flow | runs | p50 | p95 | min | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, values in (("real node, chart's pods", real), ("kwok, local processes", fake)):
        print(
            f"| {label} | {len(values)} | {statistics.median(values):.1f} s | {percentile(values, 0.95):.1f} s "
            f"| {min(values):.1f} s | {max(values):.1f} s |"
        )
    print(f"\nreal / kwok (p50): {statistics.median(real) / statistics.median(fake):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
