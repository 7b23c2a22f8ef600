"""A team namespace for a deployed test: alice may manage Workspaces there (and what else the test names),
admitted by a Dataset of the test's own over the sample corpus (selected by a label the namespace carries).
Removed, with the Dataset, when the block ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.deployed.conftest import ALICE, Deployed, PortForward
from tests.deployed.hub_session import HubSession
from tests.deployed.test_operator_restart_churn import _dataset, _workspace
from tests.integration.conftest import Kubectl


@contextmanager
def team_namespace(
    kubectl: Kubectl, prefix: str, label: str, dataset: str, description: str, resources: str = ""
) -> Iterator[str]:
    """A namespace ``prefix``-<random> labelled ``label``=yes, with Dataset ``dataset`` admitting it; alice
    holds a role over Workspaces and ``resources`` (kubectl create role's --resource, comma-separated)."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:4]}"
    body = _dataset()
    body["metadata"]["name"] = dataset
    body["spec"]["description"] = description
    body["spec"]["access"]["namespaces"] = {"selector": {"matchLabels": {label: "yes"}}}
    kubectl.apply(body)
    kubectl.run("create", "namespace", namespace)
    kubectl.run("label", "namespace", namespace, f"{label}=yes")
    kinds = ",".join(["workspaces.cleanroom.dev", *filter(None, resources.split(","))])
    kubectl.run(
        "-n", namespace, "create", "role", "modeller", "--verb=get,list,watch,create,update,patch,delete",
        f"--resource={kinds}",
    )  # fmt: skip
    kubectl.run("-n", namespace, "create", "rolebinding", "modeller", "--role=modeller", f"--user={ALICE}")
    kubectl.run("wait", "--for=condition=Ready", f"dataset/{dataset}", "--timeout=300s")
    try:
        yield namespace
    finally:
        kubectl.run("delete", "workspaces", "--all", "-n", namespace, "--wait=false", check=False)
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
        kubectl.run("delete", "dataset", dataset, "--wait=false", check=False)


def start_workspaces(
    kubectl: Kubectl,
    deployed: Deployed,
    proxy: PortForward,
    pairs: list[tuple[str, str]],
    label: str,
    dataset: str,
) -> list[tuple[str, str]]:
    """Alice's Workspaces (namespace, name) over ``dataset``, labelled ``label``=yes, started through the hub
    one after the other (each once the one before is Ready)."""
    hub = HubSession.sign_in(proxy.url, ALICE, ("sample-ai",))
    for ns, name in pairs:
        body = _workspace(ns, name, deployed.notebook_image, False)
        body["metadata"]["labels"] = {label: "yes"}
        body["spec"]["dataset"] = {"name": dataset}
        kubectl.apply(body, "--as", ALICE)
        hub.start(ns, name, timeout=420)
        kubectl.run("wait", "--for=condition=Ready", f"workspace/{name}", "-n", ns, "--timeout=300s")
    return pairs
