"""The notebook extra's JupyterLab agrees with the lab extension built into the notebook image.

The image installs JupyterLab from pyproject.toml's ``notebook`` extra (both Containerfile targets) and
builds "Request export…" (images/notebook/labextension) against ``@jupyterlab/core-meta``: the shared
``@jupyterlab/*`` versions its federated modules require at run time. An extra that admits an older minor
than the one the extension was built for lets pip install a lab whose core packages the extension does not
accept."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _extra_jupyterlab() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = (
        Requirement(spec)
        for spec in project["optional-dependencies"]["notebook"]
        if Requirement(spec).name == "jupyterlab"
    )
    return pin


def _extension_core() -> Version:
    package = json.loads((ROOT / "images/notebook/labextension/package.json").read_text())
    return Version(package["devDependencies"]["@jupyterlab/core-meta"])


def test_the_notebook_extra_admits_the_jupyterlab_the_extension_is_built_against() -> None:
    assert _extension_core() in _extra_jupyterlab().specifier


def test_the_notebook_extra_admits_no_older_minor_than_the_extension_is_built_against() -> None:
    core = _extension_core()
    older = Version(f"{core.major}.{core.minor - 1}.99") if core.minor else Version(f"{core.major - 1}.99")
    assert older not in _extra_jupyterlab().specifier
