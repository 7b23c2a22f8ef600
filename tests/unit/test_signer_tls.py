"""The grant signer over TLS (snapshots.signer with a server context): HTTPS only, and a client that opens a
connection and says nothing (or speaks plain HTTP) holds up only itself, not the materializers after it."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cleanroom._clients.tls import https_opener, server_context
from cleanroom.snapshots import SnapshotError, signer
from cleanroom.snapshots.grant import signer_opener
from cleanroom.snapshots.signer import serve_in_background, signer_server
from tests.integration.audit_service_process import write_localhost_certificate


class _NoSigner:
    def answer(self, request: Any) -> tuple[int, dict[str, Any]]:
        return 403, {"error": "no grant here"}


@pytest.fixture
def tls_server(tmp_path: Path) -> Any:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_localhost_certificate(cert, key)
    server = signer_server("127.0.0.1", 0, _NoSigner(), server_context(str(cert), str(key)))  # type: ignore[arg-type]
    serve_in_background(server)
    yield f"https://127.0.0.1:{server.server_address[1]}", cert.read_text()
    server.shutdown()
    server.server_close()


def test_a_silent_connection_does_not_hold_up_the_next_client(tls_server: tuple[str, str]) -> None:
    url, ca = tls_server
    port = int(url.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port))
    plain = socket.create_connection(("127.0.0.1", port))
    plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = https_opener(only_ca=ca).open(url + "/healthz", timeout=5)
        assert answer.status == 200
        # In clear, nothing comes back but the end of the connection (or a TLS alert): no HTTP answer.
        plain.settimeout(5)
        assert not plain.recv(100).startswith(b"HTTP/")
    finally:
        silent.close()
        plain.close()


def test_only_the_given_ca_is_trusted_for_the_signer(tls_server: tuple[str, str], tmp_path: Path) -> None:
    url, _ = tls_server
    other = tmp_path / "other"
    other.mkdir()
    write_localhost_certificate(other / "tls.crt", other / "tls.key")
    with pytest.raises(urllib.error.URLError) as refused:
        https_opener(only_ca=(other / "tls.crt").read_text()).open(url + "/healthz", timeout=5)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


def test_a_grant_that_names_a_ca_is_never_sent_in_clear() -> None:
    """The signer's address rides in the grant document; naming the CA but an http:// signer (altered, or
    misconfigured) would send the grant, and bring back the URLs, unencrypted."""
    plain = urllib.request.build_opener()
    assert signer_opener({"signer": "http://127.0.0.1:8093"}, plain) is plain  # a development stack
    with pytest.raises(SnapshotError, match="not HTTPS"):
        signer_opener({"signer": "http://signer.example:8443", "signerCa": "-----BEGIN"}, plain)


def test_connections_beyond_the_cap_are_closed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signer, "MAX_CONNECTIONS", 1)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_localhost_certificate(cert, key)
    server = signer_server("127.0.0.1", 0, _NoSigner(), server_context(str(cert), str(key)))  # type: ignore[arg-type]
    serve_in_background(server)
    port = server.server_address[1]
    try:
        holder = socket.create_connection(("127.0.0.1", port))  # silent: holds the one slot in its handshake
        second = socket.create_connection(("127.0.0.1", port))
        second.settimeout(5)
        assert second.recv(10) == b""  # closed by the server, not left waiting
        holder.close()
        second.close()
    finally:
        server.shutdown()
        server.server_close()
