"""What the single-user server hands to the browser, and what it refuses (pure decisions).

The browser is the way out of a workspace whose network egress is blocked, so the server answers an
allow-list of routes, the ones JupyterLab needs to edit notebooks and run kernels, and refuses the rest;
it hands over no file: not by the raw-file routes, not by export, not by the contents API for the
dataset or for any file that is not text. Text the user writes in their home (notebooks, scripts) stays
editable: that is the work. docs/threat-model.md says what this cannot stop, and the byte meter
(`notebook.meter`) bounds what any encoding can carry."""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

# Routes JupyterLab needs, relative to the server's base URL. Everything else is refused. Each line says
# what serves it and why it carries no user file: static assets, lab extensions, themes and kernel-spec
# logos come from read-only system paths (the server loads no user configuration and no user Jupyter
# path: see `workspaces.jupyter_paths`), file content only through the guarded contents manager.
_ALLOWED_ROUTES = tuple(
    re.compile(pattern)
    for pattern in (
        r"",  # redirects to the default URL
        r"(lab|doc)(/workspaces/[A-Za-z0-9_-]+)?(/tree/.*)?",  # the JupyterLab page
        r"lab/api/(settings|workspaces|translations|themes|listings)(/.*)?",
        r"lab/extensions/.+",  # federated extensions, from system labextensions paths
        r"static/.+",  # the server's and JupyterLab's bundles, from the installed packages
        r"api",  # the server's version
        r"api/(me|status)",
        r"api/(contents|kernels|sessions|terminals|kernelspecs)(/.*)?",
        r"api/events/subscribe",  # the server's event stream (a websocket)
        r"api/shutdown",  # the user may stop their own server
        r"api/cleanroom/exports",  # asks the hub for an export (`export_api`): files go to quarantine, not here
        r"kernelspecs/[^/]+/logo-(\d+x\d+\.png|svg\.svg)",  # kernel logos only, never a spec's other files
        r"terminals/websocket/[^/]+",
        r"(oauth_callback|logout|login)",  # JupyterHub's sign-in to this server
    )
)

# Routes that hand out files or archives: refused with a reason of their own, audited as downloads.
_DOWNLOAD_ROUTES = (
    (re.compile(r"files/"), "raw file downloads are disabled in this workspace"),
    (re.compile(r"view/"), "raw file views are disabled in this workspace"),
    (re.compile(r"(api/)?nbconvert(/|$)"), "notebook export (nbconvert) is disabled in this workspace"),
    (re.compile(r"(directories|extract-archive)/"), "archive downloads are disabled in this workspace"),
)
ROUTE_NOT_ALLOWED = "this route is not one a cleanroom workspace serves (the server answers an allow-list)"

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

BINARY_REFUSED = "only text files can be opened in the browser from this workspace"
_TEXT_CHUNK = 1 << 20


class Refusal(NamedTuple):
    action: str  # the audit action: download.refused or route.refused
    reason: str


def refused_route(relative_path: str) -> Refusal | None:
    """Why a request path (below the server's base URL, as the router sees it) is refused, or None."""
    path = relative_path.lstrip("/")
    for pattern, reason in _DOWNLOAD_ROUTES:
        if pattern.match(path):
            return Refusal("download.refused", reason)
    if any(pattern.fullmatch(path.rstrip("/")) for pattern in _ALLOWED_ROUTES):
        return None
    return Refusal("route.refused", ROUTE_NOT_ALLOWED)


def is_under(path: str | Path, directory: str | Path) -> bool:
    """Whether `path` is inside `directory` after resolving symlinks: a link in the home that points into
    the dataset is the dataset."""
    if not directory:
        return False
    real, root = os.path.realpath(path), os.path.realpath(directory)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def is_text(chunks: Iterable[bytes]) -> bool:
    """Whether the whole content is UTF-8 text without NUL bytes: the only content the contents API hands
    to the browser. Every byte counts, so a text prefix cannot carry a binary tail (a check of the first
    kilobytes could be fooled by 8 KiB of spaces)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in chunks:
            if b"\0" in chunk:
                return False
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def file_chunks(path: str | Path) -> Iterable[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_TEXT_CHUNK):
            yield chunk


def refused_read(os_path: str | Path, data_dir: str | Path) -> str | None:
    """Why reading a file's content through the contents API is refused, or None."""
    if is_under(os_path, data_dir):
        return "dataset files cannot be opened in the browser; read them from code in a notebook"
    if not is_text(file_chunks(os_path)):
        return BINARY_REFUSED
    return None


def refused_model(model: dict[str, object]) -> str | None:
    """The same decision on the model the contents manager is about to send (the file may have changed
    since it was checked): no base64 content at all, no NUL in text."""
    if model.get("format") == "base64":
        return BINARY_REFUSED
    content = model.get("content")
    if model.get("type") == "file" and isinstance(content, str) and "\0" in content:
        return BINARY_REFUSED
    return None


def refused_copy(os_path: str | Path, data_dir: str | Path) -> str | None:
    if is_under(os_path, data_dir):
        return "dataset files cannot be copied through the file browser; read them from code"
    return None
