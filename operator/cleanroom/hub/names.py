"""A Workspace's JupyterHub server name: defined in `cleanroom.api.contract`, which the operator (for
`status.url`) and the hub share."""

from cleanroom.api.contract import SERVER_NAME_MAX_LENGTH as MAX_LENGTH
from cleanroom.api.contract import server_name

__all__ = ["MAX_LENGTH", "server_name"]
