"""The JupyterHub side: `authenticator` (JWT sign-in), `spawner` (servers are Workspaces) and `pages` (the
workspace list and the audit intake), loaded by the hub's configuration (`cleanroom.hub.config`)."""
