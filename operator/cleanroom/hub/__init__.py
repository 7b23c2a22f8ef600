"""The JupyterHub side: JWT sign-in, the spawner over Workspaces, the hub's pages and audit endpoint.

`tokens` (verification and dev minting) is pure and imports no JupyterHub; `authenticator`, `spawner` and
`handlers` plug into JupyterHub and are loaded by its config (`cleanroom.hub.config`)."""
