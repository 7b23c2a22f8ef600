# The hub's configuration: everything comes from CLEANROOM_HUB_* variables (see cleanroom.hub.config).
from cleanroom.hub.config import configure

configure(c)  # type: ignore[name-defined]  # noqa: F821  (JupyterHub injects `c`)
