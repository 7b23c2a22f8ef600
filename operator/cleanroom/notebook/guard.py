"""What the single-user server refuses to hand to the browser (pure decisions).

The browser is the way out of a workspace whose network egress is blocked, so the server hands it no
file: not by the raw-file routes, not by export, not by the contents API for the dataset or for any
binary file. Text the user writes in their home (notebooks, scripts) stays editable: that is the work.
docs/threat-model.md says what this cannot stop."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Routes that return file bytes or archives, relative to the server's base URL.
_REFUSED_ROUTES = (
    (re.compile(r"^files/"), "raw file downloads are disabled in this workspace"),
    (re.compile(r"^view/"), "raw file views are disabled in this workspace"),
    (re.compile(r"^nbconvert/"), "notebook export (nbconvert) is disabled in this workspace"),
    (re.compile(r"^api/nbconvert/"), "notebook export (nbconvert) is disabled in this workspace"),
    (re.compile(r"^(directories|extract-archive)/"), "archive downloads are disabled in this workspace"),
)

# JupyterLab plugins that offer downloads or open raw files in a browser tab; the server refuses those
# requests anyway, removing the commands keeps the interface honest.
DISABLED_LAB_PLUGINS = (
    "@jupyterlab/docmanager-extension:download",
    "@jupyterlab/filebrowser-extension:download",
    "@jupyterlab/docmanager-extension:open-browser-tab",
    "@jupyterlab/filebrowser-extension:open-browser-tab",
    "@jupyterlab/filebrowser-extension:share-file",
    "@jupyterlab/notebook-extension:export",
    # Not a download, but the news feed has every browser poll jupyter.org from inside a session.
    "@jupyterlab/apputils-extension:announcements",
)

_SNIFF_BYTES = 8192


def refused_route(relative_path: str) -> str | None:
    """Why a request path (below the server's base URL) is refused, or None."""
    path = relative_path.lstrip("/")
    for pattern, reason in _REFUSED_ROUTES:
        if pattern.match(path):
            return reason
    return None


def is_under(path: str | Path, directory: str | Path) -> bool:
    """Whether `path` is inside `directory` after resolving symlinks: a link in the home that points into
    the dataset is the dataset."""
    if not directory:
        return False
    real, root = os.path.realpath(path), os.path.realpath(directory)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def looks_binary(head: bytes) -> bool:
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the sniff boundary is still text.
        return error.start < len(head) - 4
    return False


def refused_read(os_path: str | Path, data_dir: str | Path, head: bytes) -> str | None:
    """Why reading a file's content through the contents API is refused, or None."""
    if is_under(os_path, data_dir):
        return "dataset files cannot be opened in the browser; read them from code in a notebook"
    if looks_binary(head[:_SNIFF_BYTES]):
        return "binary files cannot be downloaded to the browser from this workspace"
    return None


def refused_copy(os_path: str | Path, data_dir: str | Path) -> str | None:
    if is_under(os_path, data_dir):
        return "dataset files cannot be copied through the file browser; read them from code"
    return None
