"""The chart's metrics wiring, rendered by `helm template` (no cluster): the ports each component serves its
metrics on, the NetworkPolicy rules that admit Prometheus to exactly those ports, the optional ServiceMonitors,
and a Grafana dashboard whose every query names a series the code defines.

The series are read from the code's own definitions (prometheus_client's Counter, Gauge, Histogram and the
custom collectors' metric families, parsed from the source of the modules the processes run), never from a
list kept here; tests/deployed/test_metrics.py scrapes the installed chart."""

from __future__ import annotations

import ast
import base64
import functools
import importlib
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/cleanroom"
VERSIONS = dict(
    line.split("=", 1) for line in (ROOT / "hack/versions.env").read_text().splitlines() if "=" in line
)
CACHE = Path(os.environ.get("CLEANROOM_CACHE", Path.home() / ".cache/cleanroom"))
HELM = CACHE / f"bin/helm-{VERSIONS['HELM_VERSION']}/helm"

pytestmark = pytest.mark.skipif(
    not HELM.exists(), reason=f"helm is not built yet ({HELM}): hack/build-binaries.sh helm"
)

RELEASE, NAMESPACE = "cleanroom", "cleanroom-system"
FULL = RELEASE  # a release named like the chart keeps its name (cleanroom.fullname)
SCRAPER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
    "podSelector": {"matchLabels": {"app": "prom", "tier": "scraper"}},
}
# As an admin sets it: Helm merges maps, so the default pod label is dropped by setting it to null.
SCRAPER_VALUES = {
    **SCRAPER,
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": None, "app": "prom", "tier": "scraper"}},
}
# The modules whose metrics the three processes serve: the operator's and hub's (with JupyterHub's own, in the
# same registry as the hub's) and the audit service's.
SERIES_MODULES = {
    "operator": ("cleanroom.handlers._metrics",),
    "hub": ("cleanroom.hub.metrics", "jupyterhub.metrics"),
    "audit": ("cleanroom.auditweb.metrics",),
}
# Labels Prometheus adds to every series of a target it finds through a ServiceMonitor.
TARGET_LABELS = frozenset({"namespace", "pod", "service", "job", "instance", "endpoint", "container"})


@functools.cache
def _render(*args: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [str(HELM), "template", RELEASE, str(CHART), "-n", NAMESPACE,
         "--kube-version", VERSIONS["K8S_VERSION"].lstrip("v"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(**values: Any) -> list[dict[str, Any]]:
    """The chart's objects with these values (dotted keys, JSON values), as `helm template` makes them."""
    args = [a for key, value in sorted(values.items()) for a in ("--set-json", f"{key}={json.dumps(value)}")]
    return list(_render(*args))


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def mounted_settings(objects: list[dict[str, Any]], directory: Path) -> Path:
    """The operator's settings file as its pod sees it: the rendered workspaces.yaml, with the signer's CA
    (rendered into its ConfigMap) at the path the file names."""
    import yaml

    settings = yaml.safe_load(one(objects, "ConfigMap", f"{FULL}-workspaces")["data"]["workspaces.yaml"])
    ca = directory / "grant-signer-ca.crt"
    ca.write_text(one(objects, "ConfigMap", f"{FULL}-grant-signer-ca")["data"]["ca.crt"])
    settings["grantSignerCaFile"] = str(ca)
    path = directory / "workspaces.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def container(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    spec = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def named_ports(ports: list[dict[str, Any]], key: str = "containerPort") -> dict[str, int]:
    return {p["name"]: p[key] for p in ports}


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# --- ports ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [9090, 9311])
def test_the_operator_and_audit_service_serve_metrics_on_the_values_port_through_their_services(
    port: int,
) -> None:
    objects = render(**{"metrics.port": port})
    for deployment, service in (
        (f"{FULL}-operator", f"{FULL}-operator-metrics"),
        (f"{FULL}-audit", f"{FULL}-audit"),
    ):
        c = container(objects, deployment)
        assert flag(c["args"], "--metrics-port") == str(port), c["args"]
        assert named_ports(c["ports"])["metrics"] == port
        svc = one(objects, "Service", service)
        [metrics] = [p for p in svc["spec"]["ports"] if p["name"] == "metrics"]
        assert (metrics["port"], metrics["targetPort"]) == (port, "metrics")
    # The audit service keeps its service port for writers, the API server and officers, not for the counts.
    assert named_ports(container(objects, f"{FULL}-audit")["ports"])["https"] == 8090


def test_the_hub_serves_metrics_on_its_api_port_to_a_token_the_chart_makes() -> None:
    objects = render()
    hub = container(objects, f"{FULL}-hub")
    assert named_ports(hub["ports"]) == {"hub-api": 8081}
    assert named_ports(one(objects, "Service", f"{FULL}-hub-api")["spec"]["ports"], "port") == {
        "hub-api": 8081
    }
    [env] = [e for e in hub["env"] if e["name"] == "CLEANROOM_HUB_METRICS_TOKEN"]
    ref = env["valueFrom"]["secretKeyRef"]
    secret = one(objects, "Secret", ref["name"])
    # cleanroom.hub.config refuses a token under 32 characters.
    assert len(base64.b64decode(secret["data"][ref["key"]])) >= 32


def test_with_metrics_off_no_metrics_port_is_open_and_the_audit_counts_stay_off_its_service_port() -> None:
    objects = render(**{"metrics.enabled": False})
    operator = container(objects, f"{FULL}-operator")
    assert "--metrics-port" not in operator["args"] and "metrics" not in named_ports(operator["ports"])
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULL}-operator-metrics"]
    assert [p["name"] for p in one(objects, "Service", f"{FULL}-audit")["spec"]["ports"]] == ["https"]
    # Still served apart (where no policy rule admits anyone), so that 8090 never answers /metrics.
    assert flag(container(objects, f"{FULL}-audit")["args"], "--metrics-port") == "9090"
    hub = container(objects, f"{FULL}-hub")
    assert "CLEANROOM_HUB_METRICS_TOKEN" not in {e["name"] for e in hub["env"]}
    assert not [o for o in objects if o["metadata"]["name"] == f"{FULL}-hub-metrics-token"]


# --- network policies ----------------------------------------------------------------------------------------


def ingress_rules(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {
        o["metadata"]["name"]: list(o["spec"].get("ingress") or [])
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }


def egress_rules(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {
        o["metadata"]["name"]: list(o["spec"].get("egress") or [])
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }


def test_the_policies_admit_the_configured_prometheus_to_the_metrics_ports_and_nothing_else_new() -> None:
    on = render(**{"metrics.prometheus": SCRAPER_VALUES, "metrics.port": 9311})
    off = render(**{"metrics.prometheus": SCRAPER_VALUES, "metrics.port": 9311, "metrics.enabled": False})
    expected = {f"{FULL}-operator": 9311, f"{FULL}-audit": 9311, f"{FULL}-hub": 8081}
    before, after = ingress_rules(off), ingress_rules(on)
    assert before.keys() == after.keys()
    for policy in after:
        added = [rule for rule in after[policy] if rule not in before[policy]]
        assert [rule for rule in before[policy] if rule not in after[policy]] == [], policy
        if policy in expected:
            # Both selectors in one peer: Prometheus's pods in Prometheus's namespaces, on the one port.
            assert added == [{"from": [SCRAPER], "ports": [{"protocol": "TCP", "port": expected[policy]}]}]
        else:
            assert added == [], policy
    assert egress_rules(on) == egress_rules(off)
    # No other rule names the scraper (it reaches no other port of any component).
    for policy, rules in after.items():
        others = [
            r for r in rules if SCRAPER in r.get("from", []) and r["ports"][0]["port"] != expected[policy]
        ]
        assert others == [], policy


def test_the_default_prometheus_is_kube_prometheus_stacks_in_the_monitoring_namespace() -> None:
    [rule] = [r for r in ingress_rules(render())[f"{FULL}-operator"] if r.get("from")]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


# --- ServiceMonitors -----------------------------------------------------------------------------------------


def kinds(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_no_service_monitor_unless_enabled() -> None:
    assert kinds(render(), "ServiceMonitor") == []
    assert kinds(render(**{"metrics.serviceMonitor.enabled": False}), "ServiceMonitor") == []
    # metrics off wins over a ServiceMonitor asked for: there would be no port to scrape.
    off = render(**{"metrics.enabled": False, "metrics.serviceMonitor.enabled": True})
    assert kinds(off, "ServiceMonitor") == []


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("hub", [True, False])
def test_each_service_monitor_selects_the_one_service_with_the_port_it_scrapes(hub: bool) -> None:
    objects = render(
        **{
            "metrics.serviceMonitor.enabled": True,
            "metrics.serviceMonitor.labels": {"release": "kube-prometheus-stack"},
            "hub.enabled": hub,
        }
    )
    monitors = {m["metadata"]["name"]: m for m in kinds(objects, "ServiceMonitor")}
    expected = {f"{FULL}-operator", f"{FULL}-audit"} | ({f"{FULL}-hub"} if hub else set())
    assert set(monitors) == expected
    services = kinds(objects, "Service")
    scraped = {}
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        chosen = [
            s
            for s in services
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(chosen) == 1, f"{name} selects {[s['metadata']['name'] for s in chosen]}"
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in chosen[0]["spec"]["ports"]}
        scraped[chosen[0]["metadata"]["name"]] = (endpoint["port"], endpoint["path"])
    assert scraped[f"{FULL}-operator-metrics"] == ("metrics", "/metrics")
    assert scraped[f"{FULL}-audit"] == ("metrics", "/metrics")
    if hub:
        assert scraped[f"{FULL}-hub-api"] == ("hub-api", "/hub/metrics")
        credentials = monitors[f"{FULL}-hub"]["spec"]["endpoints"][0]["authorization"]["credentials"]
        # The same Secret and key the hub reads its Prometheus token from.
        [env] = [
            e for e in container(objects, f"{FULL}-hub")["env"] if e["name"] == "CLEANROOM_HUB_METRICS_TOKEN"
        ]
        assert credentials == env["valueFrom"]["secretKeyRef"]


# --- the dashboard -------------------------------------------------------------------------------------------

DASHBOARD = CHART / "files/grafana-dashboard.json"


def test_the_dashboard_configmap_is_rendered_only_when_enabled_and_labelled_for_the_sidecar() -> None:
    assert not [o for o in render() if o["metadata"]["name"] == f"{FULL}-dashboard"]
    objects = render(
        **{
            "metrics.dashboard.enabled": True,
            "metrics.dashboard.namespace": "monitoring",
            "metrics.dashboard.annotations": {"grafana_folder": "cleanroom"},
        }
    )
    configmap = one(objects, "ConfigMap", f"{FULL}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "cleanroom"}
    [(key, text)] = configmap["data"].items()
    assert key.endswith(".json") and json.loads(text) == json.loads(DASHBOARD.read_text())


def _source(module_name: str) -> Path:
    """The module's file, found without importing it (the operator's package registers its handlers)."""
    if module_name.startswith("cleanroom."):
        return ROOT / "operator" / (module_name.replace(".", "/") + ".py")
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, module_name
    return Path(spec.origin)


def _constant(node: ast.expr | None, module_name: str) -> Any:
    """A literal, or a module-level name (JupyterHub's metrics_prefix) read from the imported module."""
    if node is None:
        return None
    if isinstance(node, ast.Name):
        return getattr(importlib.import_module(module_name), node.id)
    return ast.literal_eval(node)


def defined_series(module_name: str) -> dict[str, frozenset[str]]:
    """Every series name the module's metric definitions produce, with its labels: Counter x -> x_total,
    Histogram x -> x_bucket (le), x_count, x_sum; Gauge and metric families as named."""
    series: dict[str, frozenset[str]] = {}
    for node in ast.walk(ast.parse(_source(module_name).read_text())):
        if not isinstance(node, ast.Call):
            continue
        kind = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if kind not in {"Counter", "Gauge", "Histogram", "GaugeMetricFamily", "CounterMetricFamily"}:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        name = _constant(node.args[0] if node.args else keywords.get("name"), module_name)
        label_node = (
            node.args[2] if len(node.args) > 2 else keywords.get("labelnames", keywords.get("labels"))
        )
        labels = frozenset(_constant(label_node, module_name) or ())
        namespace = _constant(keywords.get("namespace"), module_name)
        full = f"{namespace}_{name}" if namespace else str(name)
        if kind in {"Counter", "CounterMetricFamily"}:
            series[full.removesuffix("_total") + "_total"] = labels
        elif kind == "Histogram":
            series.update({f"{full}_bucket": labels | {"le"}, f"{full}_count": labels, f"{full}_sum": labels})
        else:
            series[full] = labels
    assert series, f"no metric definitions found in {module_name}"
    return series


@functools.cache
def exported() -> dict[str, dict[str, frozenset[str]]]:
    return {
        component: {k: v for m in modules for k, v in defined_series(m).items()}
        for component, modules in SERIES_MODULES.items()
    }


def test_the_series_parser_reads_each_kind_of_definition() -> None:
    series = exported()
    assert series["operator"]["cleanroom_reconciles_total"] == {"kind"}
    assert series["operator"]["cleanroom_reconcile_duration_seconds_bucket"] == {"kind", "le"}
    assert series["operator"]["cleanroom_workspaces"] == {"phase"}  # a custom collector's family
    assert series["hub"]["cleanroom_hub_sign_ins_total"] == frozenset()
    assert series["hub"]["jupyterhub_active_users"] == {"period"}  # namespace= from a module variable
    assert series["audit"]["cleanroom_audit_last_checkpoint_age_seconds"] == frozenset()


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")


def query_problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What in a PromQL query the code does not export: a series name, or a label of one."""
    problems = []
    grouped = {
        label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()
    }
    matched: dict[str, set[str]] = {}
    for name, inner in _SELECTOR.findall(expr):
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", re.sub(r'"[^"]*"', '""', inner)))
        matched.setdefault(name, set()).update(labels)
    bare = _SELECTOR.sub(lambda m: m.group(1) or "", _GROUPING.sub("", re.sub(r'"[^"]*"', "", expr)))
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    names = {n for n in re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare) if n not in _KEYWORDS}
    for name in sorted(names - series.keys()):
        problems.append(f"series {name} is not defined by the code")
    known = [n for n in names if n in series]
    for name, labels in matched.items():
        for label in sorted(labels - series.get(name, frozenset()) - TARGET_LABELS):
            problems.append(f"{name} has no label {label}")
    allowed = set(TARGET_LABELS).union(*(series[n] for n in known)) if known else set(TARGET_LABELS)
    problems += [f"no series here has the label {label}" for label in sorted(grouped - allowed)]
    return problems


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert found, f"variable {variable['name']}: a query this check cannot read"
            metric, label = found.groups()
            queries.append((f"variable {variable['name']}", f"count by ({label}) ({metric})"))
    return queries


def all_series() -> dict[str, frozenset[str]]:
    return {k: v for component in SERIES_MODULES for k, v in exported()[component].items()}


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(cleanroom_reconcile_total[5m]))", "series cleanroom_reconcile_total is not defined"),
        ('sum(cleanroom_workspaces{user="alice"})', "cleanroom_workspaces has no label user"),
        ("sum by (user) (cleanroom_workspaces)", "no series here has the label user"),
        ("max(jupyterhub_active_servers)", "series jupyterhub_active_servers is not defined"),
        ('rate(cleanroom_audit_events_total{intake="writers"}[5m])', "cleanroom_audit_events_total is not"),
    ],
)
def test_the_query_check_names_a_series_or_label_the_code_does_not_export(expr: str, problem: str) -> None:
    found = query_problems(expr, all_series())
    assert any(problem in p for p in found), found


def test_the_query_check_passes_what_the_code_exports() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, kind) (rate(cleanroom_reconcile_duration_seconds_bucket"
        '{namespace=~"$namespace", kind!="x"}[5m])))'
    )
    assert query_problems(expr, all_series()) == []


def test_every_dashboard_query_names_only_series_and_labels_the_code_exports() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    problems = [f"{title}: {p}" for title, expr in queries for p in query_problems(expr, all_series())]
    assert problems == []


def test_the_dashboard_shows_each_component() -> None:
    text = " ".join(expr for _, expr in dashboard_queries())
    for component, series in exported().items():
        assert any(re.search(rf"\b{name}\b", text) for name in series), f"no panel shows the {component}"
