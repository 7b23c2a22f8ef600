"""The copy Job's side of an export, attacked through the home folder the modeller arranges: a symbolic link
to the dataset or to anything of the Job's own is refused, and only regular files within the size limit
leave. The upload goes to a real HTTP server standing in for the store's presigned URLs."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from cleanroom.airlock.copy import CopyRefused, copy_to_quarantine, read_grant, read_home_file
from cleanroom.airlock.store import COPY_MANIFEST_KIND, RequestKey, build_upload_grant, verify_copy
from cleanroom.snapshots import content_digest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home/results").mkdir(parents=True)
    (tmp_path / "home/results/metrics.csv").write_text("fold,dice\n1,0.87\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/scan.dcm").write_bytes(b"\0" * 128 + b"DICM")
    return tmp_path / "home"


def test_a_regular_file_is_read(home: Path) -> None:
    assert read_home_file(home, "results/metrics.csv", 1000) == b"fold,dice\n1,0.87\n"


def test_a_symbolic_link_to_the_dataset_is_refused(home: Path) -> None:
    os.symlink(home.parent / "data/scan.dcm", home / "results/scan.csv")
    with pytest.raises(CopyRefused, match="symbolic link is refused"):
        read_home_file(home, "results/scan.csv", 1000)


def test_a_linked_folder_on_the_way_is_refused(home: Path) -> None:
    os.symlink(home.parent / "data", home / "linked")
    with pytest.raises(CopyRefused, match="links are not followed"):
        read_home_file(home, "linked/scan.dcm", 1000)


def test_paths_out_of_the_home_and_special_files_are_refused(home: Path) -> None:
    for path in ("../data/scan.dcm", "/etc/passwd", "results/./metrics.csv"):
        with pytest.raises(CopyRefused, match="not a path inside the home folder"):
            read_home_file(home, path, 1000)
    os.mkfifo(home / "pipe")
    with pytest.raises(CopyRefused, match="not a regular file"):
        read_home_file(home, "pipe", 1000)


def test_a_file_over_the_limit_is_refused(home: Path) -> None:
    with pytest.raises(CopyRefused, match="larger than the 5 bytes"):
        read_home_file(home, "results/metrics.csv", 5)


class _Store(BaseHTTPRequestHandler):
    objects: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.objects.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def do_PUT(self) -> None:
        self.objects[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def store() -> Iterator[str]:
    _Store.objects = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_copy_uploads_each_file_and_a_manifest_the_operator_verifies(home: Path, store: str) -> None:
    from datetime import UTC, datetime, timedelta

    key = RequestKey("ns", "paper", "uid")
    files = ["results/metrics.csv"]
    grant = build_upload_grant(
        key, files, 1000, lambda k, _: f"{store}/{k}", timedelta(hours=1), datetime.now(UTC)
    )
    _Store.objects["/grant"] = json.dumps(grant).encode()
    copied = copy_to_quarantine(f"{store}/grant", home)
    assert copied[0].digest == content_digest(b"fold,dice\n1,0.87\n")
    manifest = json.loads(_Store.objects["/" + key.staging_manifest])
    assert manifest["kind"] == COPY_MANIFEST_KIND
    staged = lambda i: _Store.objects.get("/" + key.staging(i))  # noqa: E731
    assert verify_copy(files, manifest, staged)[0]["path"] == "results/metrics.csv"
    # What the Job reports is checked against what it uploaded: a swapped upload does not verify.
    _Store.objects["/" + key.staging(0)] = b"something else"
    with pytest.raises(Exception, match="do not match the digest"):
        verify_copy(files, manifest, staged)
    with pytest.raises(Exception, match="requested files in order"):
        verify_copy(["other.csv"], manifest, staged)


def test_the_grant_is_read_once_the_store_becomes_reachable() -> None:
    """A new pod's policies take effect a moment after it starts (the real node's network plugin rejects its
    connections until then): refused connections are tried again; the store's own refusal is not."""
    import socket
    import urllib.error
    import urllib.request

    from cleanroom._clients.tls import https_opener

    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
    url = f"http://127.0.0.1:{port}/grant"
    _Store.objects = {"/grant": b'{"kind": "late"}'}
    server: list[ThreadingHTTPServer] = []

    def start_late() -> None:
        server.append(ThreadingHTTPServer(("127.0.0.1", port), _Store))
        server[0].serve_forever()

    threading.Timer(1.0, start_late).start()
    try:
        assert read_grant(https_opener(""), url, patience=20, pause=0.2) == b'{"kind": "late"}'
        with pytest.raises(urllib.error.HTTPError):
            read_grant(https_opener(""), url.replace("/grant", "/other"), patience=20, pause=0.2)
    finally:
        if server:
            server[0].shutdown()
            server[0].server_close()
    # Nobody ever listens: the copy fails once its patience is spent, saying why.
    with pytest.raises(urllib.error.URLError, match="refused"):
        read_grant(https_opener(""), url, patience=0.5, pause=0.2)
