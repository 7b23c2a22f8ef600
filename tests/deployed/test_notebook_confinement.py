"""A modeller's code in the running notebook pod on the real node, trying to take data away: the dataset is
read-only, and nothing but the hub's API answers, DNS included. The same probes are run once with the
protections removed (the policies deleted while the operator is stopped), so each refusal is shown to come
from the protection and not from the stack."""

from __future__ import annotations

import json
from typing import Any

from tests.deployed.conftest import SAMPLE_NS, SAMPLE_WS, Deployed, exec_python, notebook_pod, wait_for
from tests.integration.conftest import Kubectl

# Runs inside the notebook container: connects to each target and reports what happened.
PROBE = r"""
import json, socket, struct, urllib.request
targets = json.loads(TARGETS)
def tcp(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "connected"
    except OSError as error:
        return f"{type(error).__name__}: {error}"
def dns(server):
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in "kubernetes.default.svc.cluster.local".split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    try:
        sock.sendto(query, (server, 53))
        return "connected" if sock.recv(512)[:2] == b"\x12\x34" else "garbled"
    except OSError as error:
        return f"{type(error).__name__}: {error}"
out = {}
for name, (kind, host, port) in targets.items():
    out[name] = dns(host) if kind == "dns" else tcp(host, port)
print(json.dumps(out))
"""

WRITE_DATA = r"""
import errno, json, os
results = {}
try:
    open("/data/attack.txt", "w").write("x")
    results["create"] = "written"
except OSError as error:
    results["create"] = errno.errorcode.get(error.errno, str(error.errno))
victim = next(os.path.join(d, f) for d, _, files in os.walk("/data") for f in files)
for what, action in (("delete", lambda: os.remove(victim)), ("append", lambda: open(victim, "ab").write(b"x"))):
    try:
        action()
        results[what] = "done"
    except OSError as error:
        results[what] = errno.errorcode.get(error.errno, str(error.errno))
print(json.dumps(results))
"""


_KEPT_METADATA = ("name", "namespace", "labels", "annotations")


def _targets(kubectl: Kubectl, deployed: Deployed) -> dict[str, tuple[str, str, int]]:
    ns = deployed.namespace

    def pod_ip(namespace: str, selector: str) -> str:
        items = kubectl.get("pods", "-n", namespace, "-l", selector)["items"]
        return str(next(p["status"]["podIP"] for p in items if p["status"].get("podIP")))

    def service_ip(namespace: str, name: str) -> str:
        return str(kubectl.get("service", name, "-n", namespace)["spec"]["clusterIP"])

    slice_ = kubectl.get("endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes")[
        "items"
    ][0]
    api_ip, api_port = slice_["endpoints"][0]["addresses"][0], slice_["ports"][0]["port"]
    return {
        "s3 pod": ("tcp", pod_ip(ns, "app.kubernetes.io/name=cleanroom-s3"), 7070),
        "s3 service": ("tcp", service_ip(ns, "cleanroom-s3"), 7070),
        "api service": ("tcp", service_ip("default", "kubernetes"), 443),
        "api server": ("tcp", api_ip, api_port),
        "another pod": ("tcp", pod_ip("kube-system", "k8s-app=kube-dns"), 53),
        "node kubelet": ("tcp", api_ip, 10250),
        "dns": ("dns", service_ip("kube-system", "kube-dns"), 53),
        "hub api": ("tcp", service_ip(ns, "cleanroom-hub-api"), 8081),
    }


def _probe(kubectl: Kubectl, pod: str, targets: dict[str, Any]) -> dict[str, str]:
    code = f"TARGETS = {json.dumps(json.dumps(targets))}\n{PROBE}"
    result: dict[str, str] = exec_python(kubectl, SAMPLE_NS, pod, code)
    return result


def test_the_dataset_is_read_only_in_the_running_pod(kubectl: Kubectl, sample: dict[str, Any]) -> None:
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)
    assert pod["spec"]["nodeName"] == "real-0"
    result = exec_python(kubectl, SAMPLE_NS, pod["metadata"]["name"], WRITE_DATA)
    assert result == {"create": "EROFS", "delete": "EROFS", "append": "EROFS"}, result


def test_nothing_but_the_hub_api_answers_the_notebook_and_each_refusal_is_the_policys(
    kubectl: Kubectl, deployed: Deployed, sample: dict[str, Any]
) -> None:
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)["metadata"]["name"]
    targets = _targets(kubectl, deployed)
    blocked = [name for name in targets if name != "hub api"]

    # kube-router applies a policy about a second after a change: poll until the verdict settles.
    def confined() -> dict[str, str] | None:
        seen = _probe(kubectl, pod, targets)
        return (
            seen if all(seen[n] != "connected" for n in blocked) and seen["hub api"] == "connected" else None
        )

    wait_for(
        confined, timeout=60, what=f"the notebook confined (last probe: {_probe(kubectl, pod, targets)})"
    )

    # The negative control: the same probes with the protections removed. The operator puts deleted policies
    # back at once, so it is stopped first; the S3 server's own ingress policy is lifted too.
    operator = ["-n", deployed.namespace, "deployment/cleanroom-operator"]
    # Every policy that selects the store is lifted: policies add up, and the grant signer's admits only
    # the signer, so with it left in place the store stays isolated.
    saved = [
        {**policy, "metadata": {k: policy["metadata"][k] for k in _KEPT_METADATA if k in policy["metadata"]}}
        for policy in kubectl.get("networkpolicy", "-n", deployed.namespace)["items"]
        if policy["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        == "cleanroom-s3"
    ]
    assert saved, "no NetworkPolicy selects the bundled S3 server"
    kubectl.run("scale", *operator, "--replicas=0")
    try:
        kubectl.run(
            "wait",
            "--for=delete",
            "pod",
            "-n",
            deployed.namespace,
            "-l",
            "app.kubernetes.io/name=cleanroom-operator",
            "--timeout=60s",
            check=False,
        )
        kubectl.run("delete", "networkpolicy", "--all", "-n", SAMPLE_NS)
        for policy in saved:
            kubectl.run("delete", "networkpolicy", policy["metadata"]["name"], "-n", deployed.namespace)

        def open_() -> dict[str, str] | None:
            seen = _probe(kubectl, pod, targets)
            return seen if all(v == "connected" for v in seen.values()) else None

        wait_for(
            open_,
            timeout=60,
            what=f"every route open without the policies (last: {_probe(kubectl, pod, targets)})",
        )
    finally:
        for policy in saved:
            kubectl.apply(policy)
        kubectl.run("scale", *operator, "--replicas=1")
    # The operator puts the workspace's policies back, and the confinement holds again.
    wait_for(
        confined, timeout=120, what="the operator to restore the policies and the notebook confined again"
    )
