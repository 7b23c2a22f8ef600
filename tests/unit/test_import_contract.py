"""The layering of ARCHITECTURE.md holds, and the import contract in pyproject.toml would notice if it did not.

Each attack copies the package, adds one import that breaks a rule of the house and runs lint-imports on the
copy: the contract must refuse it and name the import. The same run on the real package must pass.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cleanroom.api import contract

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "cleanroom"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path, operator_dir: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with ``root``'s pyproject.toml, over the package found first in ``operator_dir``."""
    env = {**os.environ, "PYTHONPATH": str(operator_dir)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_import_contract() -> None:
    done = lint_imports(ROOT, ROOT / "operator")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "injected", "refusal"),
    [
        # A pure core reaching up into an edge.
        (
            "deid/policy.py",
            "import cleanroom.handlers",
            "cleanroom.deid is not allowed to import cleanroom.handlers",
        ),
        # The operator's pod builder importing the hub (the violation this contract was written to end).
        (
            "workspaces/manifests.py",
            "import cleanroom.hub.names",
            "cleanroom.workspaces is not allowed to import cleanroom.hub",
        ),
        # One core borrowing another's client instead of the clients layer.
        (
            "sources/_readers.py",
            "import cleanroom.snapshots",
            "cleanroom.sources is not allowed to import cleanroom.snapshots",
        ),
        # The notebook image's code loading a storage client.
        ("notebook/meter.py", "import minio", "cleanroom.notebook is not allowed to import minio"),
        # The contract module, which `cleanroom --help` imports, loading the Kubernetes client.
        ("api/contract.py", "import kubernetes", "cleanroom.api is not allowed to import kubernetes"),
        # The audit core serving a web page again (the audit service is auditweb, an edge).
        ("audit/spool.py", "import aiohttp", "cleanroom.audit is not allowed to import aiohttp"),
        # The audit core reaching the cluster, even through the clients layer.
        (
            "audit/chain.py",
            "import cleanroom._clients.kube",
            "cleanroom.audit is not allowed to import cleanroom._clients.kube",
        ),
        # The Dataset plan reading the store itself instead of being told what the handler read.
        (
            "datasets/plan.py",
            "import cleanroom.snapshots",
            "cleanroom.datasets is not allowed to import cleanroom._clients",
        ),
        # A private module used from outside its package (by the CLI, which may import anything else).
        ("cli_deid.py", "import cleanroom.handlers._kube", "cleanroom.handlers._kube"),
    ],
)
def test_the_contract_refuses_an_import_that_breaks_the_layers(
    tmp_path: Path, module: str, injected: str, refusal: str
) -> None:
    copy = tmp_path / "operator" / "cleanroom"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = copy / module
    target.write_text(target.read_text() + f"\n{injected}  # noqa\n")

    done = lint_imports(tmp_path, tmp_path / "operator")

    assert done.returncode != 0, done.stdout[-4000:]
    assert refusal in done.stdout, done.stdout[-4000:]


# The contract's names that another part could write out instead: its labels, annotations and variables.
CONTRACT_NAMES = {
    value
    for value in vars(contract).values()
    if isinstance(value, str) and value.startswith(("cleanroom.dev/", "CLEANROOM_"))
}
# TODO(issue 16): the hub's session Secret labels its Workspace with the literal; the hub's modules are being
# reworked, so it takes api.contract.WORKSPACE_LABEL with that change.
DEBT = {("hub/workspace_api.py", contract.WORKSPACE_LABEL)}


def written_out(path: Path, names: set[str]) -> set[str]:
    """The string constants of a module that spell one of ``names``, docstrings aside."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    }


def test_the_contract_names_are_written_in_api_only() -> None:
    assert {
        "cleanroom.dev/workspace",
        "cleanroom.dev/created-by",
        "CLEANROOM_SNAPSHOT_GRANT_URL",
    } <= CONTRACT_NAMES
    scattered = sorted(
        (str(path.relative_to(PACKAGE)), name)
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] != "api"
        for name in written_out(path, CONTRACT_NAMES)
        if (str(path.relative_to(PACKAGE)), name) not in DEBT
    )
    assert scattered == [], "import these from cleanroom.api.contract"


def test_the_literal_check_sees_a_label_written_out(tmp_path: Path) -> None:
    # The control: a module that writes a label out is found, so an empty list above means something.
    module = tmp_path / "module.py"
    module.write_text('"""cleanroom.dev/dataset"""\nLABELS = {"cleanroom.dev/workspace": "w"}\n')
    assert written_out(module, CONTRACT_NAMES) == {"cleanroom.dev/workspace"}
