"""The copy Job's side of an export (`cleanroom airlock-copy HOME`): read the requested files from the
Workspace's home volume, mounted read-only, and upload each to the presigned URL its grant gives it, then
the manifest of what was sent (path, sha256, size). The Job holds no storage key; the operator verifies
every upload against that manifest before anything is checked.

The home is the modeller's to arrange, so each path is opened one component at a time without following a
symbolic link (O_NOFOLLOW): a link to the notebook's /data, to /proc or to anything of the Job's own
cannot turn an export of a result into an export of something else. Only regular files are read, and no
more bytes than the grant allows in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cleanroom._clients.first_contact import PATIENCE_SECONDS, read_first
from cleanroom._clients.tls import https_opener
from cleanroom.airlock.store import COPY_MANIFEST_KIND, UPLOAD_GRANT_KIND

# Where the Job finds its grant URL (from the export's upload Secret; never on a command line).
UPLOAD_GRANT_VARIABLE = "CLEANROOM_EXPORT_GRANT_URL"
# The first contact with the store is tried again while the new pod's policy is programmed
# (`_clients.first_contact`; found on the real node: every attempt of a copy Job was refused).
REACH_STORE_SECONDS = PATIENCE_SECONDS
REACH_RETRY_SECONDS = 2.0


class CopyRefused(RuntimeError):
    """A requested file that cannot be exported as asked; the message names it (the pod's termination
    message, which the operator reports on the ExportRequest)."""


@dataclass(frozen=True)
class Copied:
    path: str
    digest: str
    size: int


def read_home_file(home: Path, relative: str, limit: int) -> bytes:
    """The bytes of ``home/relative``: a regular file reached without following any symbolic link, and at
    most ``limit`` bytes long."""
    parts = relative.split("/")
    if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise CopyRefused(f"{relative}: not a path inside the home folder")
    directory = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            except OSError as error:
                raise CopyRefused(
                    f"{relative}: {part} is not a folder of the home (links are not followed)"
                ) from error
            os.close(directory)
            directory = inner
        try:
            handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        except FileNotFoundError as error:
            raise CopyRefused(f"{relative}: no such file in the home folder") from error
        except OSError as error:
            raise CopyRefused(
                f"{relative}: cannot be opened as a file (a symbolic link is refused)"
            ) from error
    finally:
        os.close(directory)
    with os.fdopen(handle, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise CopyRefused(f"{relative}: not a regular file")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise CopyRefused(f"{relative}: larger than the {limit} bytes the Dataset lets leave")
    return data


def _send(opener: urllib.request.OpenerDirector, url: str, data: bytes, what: str) -> None:
    request = urllib.request.Request(url, data=data, method="PUT")
    request.add_header("Content-Type", "application/octet-stream")
    try:
        with opener.open(request, timeout=120) as response:
            response.read()
    except OSError as error:
        raise CopyRefused(f"{what}: the upload failed: {error}") from error


def read_grant(
    opener: urllib.request.OpenerDirector,
    url: str,
    patience: float = REACH_STORE_SECONDS,
    pause: float = REACH_RETRY_SECONDS,
) -> bytes:
    """The grant document, tried again while the store cannot be reached yet (for ``patience`` seconds)."""
    return read_first(opener, url, patience=patience, pause=pause)


def copy_to_quarantine(grant_url: str, home: Path, ca_bundle: str = "") -> list[Copied]:
    """Upload every file the grant names; the manifest last, so that its presence says the copy is whole."""
    opener = https_opener(ca_bundle)
    grant = json.loads(read_grant(opener, grant_url))
    if grant.get("kind") != UPLOAD_GRANT_KIND:
        raise CopyRefused("the grant URL does not point at an export upload grant")
    budget = int(grant["maxBytes"])
    copied = []
    for item in grant["files"]:
        data = read_home_file(home, str(item["path"]), budget)
        budget -= len(data)
        _send(opener, item["url"], data, item["path"])
        copied.append(Copied(str(item["path"]), "sha256:" + hashlib.sha256(data).hexdigest(), len(data)))
    manifest = {
        "kind": COPY_MANIFEST_KIND,
        "files": [{"path": c.path, "digest": c.digest, "size": c.size} for c in copied],
    }
    _send(opener, grant["manifest"], json.dumps(manifest).encode(), "the copy's manifest")
    return copied
