"""The notebook image's Jupyter configuration directory (/etc/jupyter, read-only in the pod) holds the
migration marker: once any kernel has run, the home volume holds ~/.ipython, and without the marker
jupyter_core tries to write /etc/jupyter/migrated at the next start and the server dies (Errno 30)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from jupyter_core.application import JupyterApp

import cleanroom.notebook

IMAGE_CONFIG = Path(cleanroom.notebook.__file__).parent / "jupyter_config"


@pytest.mark.parametrize("marker", [True, False])
def test_a_restart_over_a_home_with_ipython_does_not_migrate_into_the_image_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: bool
) -> None:
    config = tmp_path / "etc-jupyter"
    config.mkdir()
    if marker:
        (config / "migrated").write_bytes((IMAGE_CONFIG / "migrated").read_bytes())
    home = tmp_path / "home"
    (home / ".ipython").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))
    app = JupyterApp()
    with mock.patch("jupyter_core.migrate.migrate") as migrate:
        app.migrate_config()
    # The shipped directory has the marker, so the image never migrates; without it, it would.
    assert migrate.called is not marker
    assert (IMAGE_CONFIG / "migrated").is_file()
