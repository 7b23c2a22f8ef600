"""Where the single-user server looks for configuration, extensions and kernel specs: never the home.

The user's code writes to the home, so anything the server loads from there is the user's to change:
`~/.jupyter` config can switch the guard off at the next start, a kernel spec in `~/.local/share/jupyter`
has its directory served by `/kernelspecs/`, a lab extension there runs in the browser. These settings
point every Jupyter search path at read-only system directories (in the image: the read-only root file
system) and leave the home only what is data: JupyterLab's saved settings and layouts. Pure: the pod
builder and the hub's local sessions pass their own directories."""

from __future__ import annotations

# In the notebook image: the guard's configuration (images/notebook/Containerfile copies jupyter_config/
# here) and a data directory on the read-only root file system that holds nothing of the user's.
IMAGE_CONFIG_DIR = "/etc/jupyter"
IMAGE_DATA_DIR = "/usr/local/share/jupyter"
RUNTIME_DIR = "/tmp/jupyter-runtime"


def jupyter_environment(config_dir: str, data_dir: str, runtime_dir: str, home: str) -> dict[str, str]:
    """The environment of a single-user server that loads no user configuration and no user Jupyter path."""
    return {
        # JupyterHub's own switch: drops every path under $HOME from config and data search paths.
        "JUPYTERHUB_DISABLE_USER_CONFIG": "1",
        "JUPYTER_CONFIG_DIR": config_dir,
        "JUPYTER_CONFIG_PATH": config_dir,
        "JUPYTER_DATA_DIR": data_dir,
        "JUPYTER_PATH": data_dir,
        # Connection files and the server's info file: written, never loaded as configuration.
        "JUPYTER_RUNTIME_DIR": runtime_dir,
        # The user's saved lab settings and layouts are data the browser reads back, not code or config.
        "JUPYTERLAB_SETTINGS_DIR": f"{home}/.jupyter/lab/user-settings",
        "JUPYTERLAB_WORKSPACES_DIR": f"{home}/.jupyter/lab/workspaces",
        # ~/.local/lib/python*/site-packages (and a usercustomize module there) is not on the server's path.
        "PYTHONNOUSERSITE": "1",
    }


def server_options(runtime_dir: str) -> list[str]:
    """Command-line settings that go with `jupyter_environment`: the notebook trust database and its key
    live in Jupyter's data directory, which is now read-only; they are the server's working state, kept
    with the runtime files (they decide whether a notebook's HTML output renders, nothing else)."""
    return [f"--NotebookNotary.data_dir={runtime_dir}"]
