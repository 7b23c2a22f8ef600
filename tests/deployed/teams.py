"""A team namespace for a deployed test: alice may manage Workspaces there (and what else the test names),
admitted by a Dataset of the test's own over the sample corpus (selected by a label the namespace carries).
Removed, with the Dataset, when the block ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.deployed.conftest import ALICE
from tests.deployed.test_operator_restart_churn import _dataset
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
