"""The hub's local-process sessions are development code: chosen only when CLEANROOM_HUB_LOCAL_PROCESS asks for
them, and never loaded by the production hub, operator or audit service."""

from __future__ import annotations

import importlib
import subprocess
import sys

from traitlets.config import Config

from cleanroom.hub.config import LOCAL_SESSION_SPAWNER, configure
from cleanroom.hub.spawner import WorkspaceSpawner

TOKENS = {
    "CLEANROOM_HUB_ISSUER": "https://login.test",
    "CLEANROOM_HUB_AUDIENCE": "hub",
    "CLEANROOM_HUB_JWKS_FILE": "/dev/null",
}


def test_the_hub_serves_workspace_pods_unless_development_asks_for_local_sessions() -> None:
    c = Config()
    configure(c, TOKENS)
    assert c.JupyterHub.spawner_class is WorkspaceSpawner
    spawner = WorkspaceSpawner(config=c)
    assert spawner._listen_address() == ("0.0.0.0", spawner.notebook_port)
    assert not hasattr(spawner, "local_root")


def test_a_development_hub_names_the_local_session_spawner_and_configures_its_meter() -> None:
    c = Config()
    configure(
        c,
        {
            **TOKENS,
            "CLEANROOM_HUB_LOCAL_PROCESS": "true",
            "CLEANROOM_HUB_LOCAL_ROOT": "/tmp/sessions",
            "CLEANROOM_HUB_METER_BUDGET_BYTES": "1000",
        },
    )
    assert c.JupyterHub.spawner_class == LOCAL_SESSION_SPAWNER
    module, _, name = LOCAL_SESSION_SPAWNER.rpartition(".")
    local = getattr(importlib.import_module(module), name)
    assert issubclass(local, WorkspaceSpawner)
    spawner = local(config=c)
    assert (spawner.local_root, spawner.meter_budget_bytes) == ("/tmp/sessions", 1000)
    host, _port = spawner._listen_address()
    assert host == "127.0.0.1"


def test_no_production_entry_point_loads_the_development_module() -> None:
    # A fresh interpreter: this test process may have imported it already.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cleanroom.hub.config, cleanroom.handlers, cleanroom.auditweb, cleanroom.notebook.extension, "
            "cleanroom.cli; print(sorted(m for m in sys.modules if m.startswith('cleanroom.dev')))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
