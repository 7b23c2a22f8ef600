"""Prometheus scrapes the installed chart, and nobody else does: from a pod labelled as the deployed values'
`metrics.prometheus` selects (ci/deployed-values.yaml), the operator's, hub's and audit service's metrics
endpoints answer, through their Services and at their pods as Prometheus's endpoints discovery finds them,
with every series the code defines; from the same kind of pod without those labels, or with them in another
namespace, each is refused by the NetworkPolicies. The refused pod then gets the labels and is admitted, so the
refusal is shown to be the policy's. The audit service's counts are no longer on its service port 8090, which
every pod may reach (the old chart served them there, to anyone)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deployed.conftest import Deployed, exec_python, wait_for
from tests.integration.conftest import ROOT, Kubectl
from tests.unit.test_chart_metrics import dashboard_queries, defined_series

VALUES = yaml.safe_load((ROOT / "charts/cleanroom/ci/deployed-values.yaml").read_text())["metrics"]
PORT = int(
    VALUES.get("port")
    or yaml.safe_load((ROOT / "charts/cleanroom/values.yaml").read_text())["metrics"]["port"]
)
SCRAPER_NS = VALUES["prometheus"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
SCRAPER_LABELS: dict[str, str] = VALUES["prometheus"]["podSelector"]["matchLabels"]
ELSEWHERE_NS = f"{SCRAPER_NS}-elsewhere"
REAL_NODE = {"cleanroom.dev/real-node": "true"}
TOLERATE_REAL_NODE = [{"key": "cleanroom.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]

# Runs in a probe pod: GETs each target without following redirects and reports the status and body, or why
# no answer came (a NetworkPolicy drops the connection: a timeout).
PROBE = r"""
import http.client, json, ssl
targets = json.loads(TARGETS)
out = {}
for name, (scheme, host, port, path, headers) in targets.items():
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=4, context=ssl._create_unverified_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=4)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        out[name] = {"status": response.status, "body": response.read().decode(errors="replace")}
    except OSError as error:
        out[name] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        connection.close()
print(json.dumps(out))
"""


def probe_pod(name: str, namespace: str, image: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod of the operator's image (it has Python) on the real node, doing nothing until probed."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"cleanroom-test": "metrics", **labels}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "nodeSelector": REAL_NODE,
            "tolerations": TOLERATE_REAL_NODE,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "c",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


@dataclass(frozen=True)
class Pods:
    scraper: tuple[str, str]  # (namespace, name): Prometheus's labels in Prometheus's namespace
    stranger: tuple[str, str]  # Prometheus's namespace, no labels
    impostor: tuple[str, str]  # Prometheus's labels, another namespace


@pytest.fixture(scope="module")
def pods(kubectl: Kubectl, deployed: Deployed) -> Iterator[Pods]:
    suffix = uuid.uuid4().hex[:5]
    made = Pods(
        (SCRAPER_NS, f"scraper-{suffix}"),
        (SCRAPER_NS, f"stranger-{suffix}"),
        (ELSEWHERE_NS, f"impostor-{suffix}"),
    )
    for namespace in (SCRAPER_NS, ELSEWHERE_NS):
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for (namespace, name), labels in (
        (made.scraper, SCRAPER_LABELS),
        (made.stranger, {}),
        (made.impostor, SCRAPER_LABELS),
    ):
        kubectl.apply(probe_pod(name, namespace, deployed.operator_image, labels))
    try:
        for namespace, name in (made.scraper, made.stranger, made.impostor):
            kubectl.run("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=110s")
        yield made
    finally:
        for namespace, name in (made.scraper, made.stranger, made.impostor):
            kubectl.run("delete", "pod", name, "-n", namespace, "--wait=false", check=False)


def hub_token(kubectl: Kubectl, deployed: Deployed) -> str:
    secret = kubectl.get("secret", "cleanroom-hub-metrics-token", "-n", deployed.namespace)
    return base64.b64decode(secret["data"]["token"]).decode()


Target = tuple[str, str, int, str, dict[str, str]]


def metrics_targets(kubectl: Kubectl, deployed: Deployed, token: str) -> dict[str, Target]:
    """Each component's metrics endpoint at its Service and at its pod (what a ServiceMonitor scrapes)."""
    ns, port = deployed.namespace, PORT

    def service_ip(name: str) -> str:
        return str(kubectl.get("service", name, "-n", ns)["spec"]["clusterIP"])

    def pod_ip(selector: str) -> str:
        items = kubectl.get("pods", "-n", ns, "-l", selector, "--field-selector=status.phase=Running")[
            "items"
        ]
        return str(next(p["status"]["podIP"] for p in items if p["status"].get("podIP")))

    bearer = {"Authorization": f"Bearer {token}"}
    operator_pod = pod_ip("app.kubernetes.io/name=cleanroom-operator")
    audit_pod = pod_ip("app.kubernetes.io/name=cleanroom-audit")
    hub_pod = pod_ip("app.kubernetes.io/name=cleanroom-hub,app.kubernetes.io/component=hub")
    return {
        "operator service": ("http", service_ip("cleanroom-operator-metrics"), port, "/metrics", {}),
        "operator pod": ("http", operator_pod, port, "/metrics", {}),
        "audit service": ("http", service_ip("cleanroom-audit"), port, "/metrics", {}),
        "audit pod": ("http", audit_pod, port, "/metrics", {}),
        "hub service": ("http", service_ip("cleanroom-hub-api"), 8081, "/hub/metrics", bearer),
        "hub pod": ("http", hub_pod, 8081, "/hub/metrics", bearer),
    }


def probe(kubectl: Kubectl, where: tuple[str, str], targets: dict[str, Target]) -> dict[str, dict[str, Any]]:
    namespace, pod = where
    code = f"TARGETS = {json.dumps(json.dumps(targets))}\n{PROBE}"
    result: dict[str, dict[str, Any]] = exec_python(kubectl, namespace, pod, code, container="c")
    return result


def series_names(text: str) -> set[str]:
    """Every series name a scrape offers, a family's HELP and TYPE included (a labelled metric that has not
    moved yet has no sample, but is served)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def expected_series() -> dict[str, set[str]]:
    """cleanroom's own series, from the code's definitions, and the JupyterHub series the dashboard shows (the
    hub image's JupyterHub may be another release than this checkout's, with a few series more or less)."""
    jupyterhub = {n for _, e in dashboard_queries() for n in re.findall(r"\bjupyterhub_\w+", e)}
    return {
        "operator": set(defined_series("cleanroom.handlers._metrics")),
        "hub": set(defined_series("cleanroom.hub.metrics")) | jupyterhub,
        "audit": set(defined_series("cleanroom.auditweb.metrics")),
    }


def missing_series(component: str, answer: dict[str, Any]) -> set[str]:
    if answer.get("status") != 200:
        return {f"(no scrape: {str(answer)[:300]})"}
    return expected_series()[component] - series_names(answer["body"])


def test_prometheus_scrapes_every_component_and_finds_the_series_the_code_defines(
    kubectl: Kubectl, deployed: Deployed, pods: Pods
) -> None:
    targets = metrics_targets(kubectl, deployed, hub_token(kubectl, deployed))

    missing: dict[str, set[str]] = {}

    def complete() -> bool:
        seen = probe(kubectl, pods.scraper, targets)
        missing.update({name: missing_series(name.split()[0], answer) for name, answer in seen.items()})
        return not any(missing.values())

    # The audit service's checkpoint age appears with its first checkpoint, a minute after it starts.
    try:
        wait_for(complete, timeout=150, interval=5, what="every series from every component")
    except AssertionError as error:
        raise AssertionError(f"{error}; missing: {missing}") from None
    seen = probe(kubectl, pods.scraper, targets)
    operator = seen["operator service"]["body"]
    phases = {
        s.labels["phase"]
        for f in text_string_to_metric_families(operator)
        if f.name == "cleanroom_workspaces"
        for s in f.samples
    }
    assert phases >= {"Pending", "Starting", "Running", "Stopped", "Expired", "Failed"}
    assert "jupyterhub_running_servers" in expected_series()["hub"]
    # The hub answers /hub/metrics to Prometheus's token only: the same scrape without it is turned away.
    bare: dict[str, Target] = {
        name: (scheme, host, port, path, {})
        for name, (scheme, host, port, path, _) in targets.items()
        if name.startswith("hub")
    }
    for name, answer in probe(kubectl, pods.scraper, bare).items():
        assert answer.get("status") in (302, 403), f"{name} without the token: {answer}"


def test_pods_that_are_not_prometheus_are_refused_every_metrics_port_until_labelled_as_it(
    kubectl: Kubectl, deployed: Deployed, pods: Pods
) -> None:
    targets = metrics_targets(kubectl, deployed, hub_token(kubectl, deployed))
    audit_ip = targets["audit service"][1]
    # The audit service port is open to every pod (writers, the API server's webhook): the stranger reaches
    # it, the positive control that the stranger's network works, and finds no counts there.
    open_port: dict[str, Target] = {"audit 8090": ("https", audit_ip, 8090, "/metrics", {})}

    # The positive control first: the scraper is answered (and kube-router has synced the new pods' addresses).
    wait_for(
        lambda: all(a.get("status") == 200 for a in probe(kubectl, pods.scraper, targets).values()),
        timeout=90,
        interval=3,
        what="the scraper answered on every metrics endpoint",
    )
    for who in (pods.stranger, pods.impostor):
        seen = probe(kubectl, who, {**targets, **open_port})
        assert seen["audit 8090"].get("status") == 404, f"{who}: {seen['audit 8090']}"
        answered = {name: a for name, a in seen.items() if name != "audit 8090" and "error" not in a}
        assert answered == {}, f"{who} was answered: { {n: a.get('status') for n, a in answered.items()} }"

    # The same stranger, labelled as Prometheus: admitted. The refusal was the policy's and nothing else.
    namespace, name = pods.stranger
    kubectl.run("label", "pod", name, "-n", namespace, *(f"{k}={v}" for k, v in SCRAPER_LABELS.items()))
    wait_for(
        lambda: all(a.get("status") == 200 for a in probe(kubectl, pods.stranger, targets).values()),
        timeout=90,
        interval=3,
        what="the stranger, labelled as Prometheus, answered on every metrics endpoint",
    )
