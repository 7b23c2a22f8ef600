"""A Workspace's JupyterHub server name.

JupyterHub 6 accepts only safe slugs as server names (1-30 lowercase letters, digits and single hyphens,
starting with a letter), and one user may reach Workspaces of the same name in several namespaces. So
the server name is a readable prefix of the Workspace name plus a hash of `namespace/name`: stable,
unique, and computed the same way by the operator (for `status.url`) and the hub."""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 30
_HASH = 6


def server_name(namespace: str, name: str) -> str:
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:_HASH]
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not readable or not readable[0].isalpha():
        readable = "w" + (f"-{readable}" if readable else "")
    readable = readable[: MAX_LENGTH - _HASH - 1].rstrip("-")
    return f"{readable}-{digest}"
