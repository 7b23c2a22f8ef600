"""Fixtures shared by the integration and browser suites, defined once so that a session has exactly one
operator process (a second would fight the first over the same objects)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import STATE, Kubectl, OperatorProcess, _stop_dev_operator


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG", str(STATE / "kubeconfig"))
    if not Path(path).exists():
        pytest.fail(f"no local cluster: {path} is missing. Run `make cluster-up` (or use `make test`).")
    return path


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Kubectl:
    k = Kubectl(kubeconfig)
    if k.run("get", "--raw=/readyz", check=False).returncode != 0:
        pytest.fail("the local API server does not answer. Run `make cluster-up`.")
    return k


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def operator(kubeconfig: str, kubectl: Kubectl) -> Iterator[OperatorProcess]:
    _stop_dev_operator()
    STATE.mkdir(exist_ok=True)
    log = STATE / "test-operator.log"
    log.write_text("")
    process = OperatorProcess(kubeconfig, log)
    yield process
    process.stop()
