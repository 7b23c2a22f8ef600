"""The grant signer: presigned GET URLs for the objects of a sealed grant's snapshot, a batch at a time.

``POST /v1/sign`` with ``{"grant": <the grant>, "digests": [...]}`` answers ``{"urls": {digest: url},
"expiresAt": ...}``, or a status and ``{"error": reason}`` (`signing.decide_signing` decides). The signer reads
each snapshot's manifest once, with its own read key, checks that it hashes to the snapshot, and keeps only
the digests it lists. It signs for the address materializers use; signing is local (no request to the
store). It answers no other path and never signs a list, a write or a key outside ``objects/``.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cleanroom.snapshots.signing import SIGN_PATH, DigestIndex, Refusal, decide_signing, timestamp
from cleanroom.snapshots.store import Presign, SnapshotNotFound, SnapshotStore, object_key

# A request body is a grant and at most MAX_BATCH digests: a few tens of kB.
MAX_BODY = 128 * 1024
# Manifests' digest sets kept at once (48 MB each for the largest, 1.5 million objects, snapshots).
MANIFESTS_KEPT = 4

log = logging.getLogger(__name__)


class ObjectSigner:
    """Answers signing requests for grants sealed with ``key``."""

    def __init__(
        self,
        store: SnapshotStore,
        presign: Presign,
        key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store, self._presign, self._key, self._clock = store, presign, key, clock
        self._index = functools.lru_cache(maxsize=MANIFESTS_KEPT)(self._read_index)
        self._lock = threading.Lock()

    def _read_index(self, dataset: str, snapshot: str) -> DigestIndex:
        # The store refuses a manifest that does not hash to its snapshot.
        return DigestIndex(self._store.object_digests(dataset, snapshot))

    def index_of(self, dataset: str, snapshot: str) -> DigestIndex:
        with self._lock:  # one read of a large manifest, not one per concurrent request
            return self._index(dataset, snapshot)

    def answer(self, request: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one signing request."""
        now = self._clock()
        try:
            decision = decide_signing(request, self._key, now, self.index_of)
        except SnapshotNotFound as error:
            return 404, {"error": str(error)}
        except Exception as error:  # the store unreachable or refusing the read key: the materializer retries
            log.warning("reading a manifest failed: %s", error)
            return 503, {"error": f"the signer cannot read the snapshot's manifest: {error}"}
        if isinstance(decision, Refusal):
            return decision.status, {"error": decision.reason}
        urls = {digest: self._presign(object_key(digest), decision.lifetime) for digest in decision.digests}
        return 200, {"urls": urls, "expiresAt": timestamp(now + decision.lifetime)}


def signer_server(
    host: str, port: int, signer: ObjectSigner, tls: ssl.SSLContext | None = None
) -> ThreadingHTTPServer:
    """A server (not yet serving) for ``signer`` on ``host``:``port``; port 0 picks a free one. With ``tls``
    it speaks HTTPS only: the URLs it answers with read patient images until they expire, so they do not
    cross the pod network in clear (the chart gives it a certificate)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != SIGN_PATH:
                return self._reply(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                return self._reply(413, {"error": f"a request body is 1 to {MAX_BODY} bytes"})
            try:
                request = json.loads(self.rfile.read(length))
            except ValueError:
                return self._reply(400, {"error": "the body is not JSON"})
            status, body = signer.answer(request)
            if status != 200:
                grant = request.get("grant") if isinstance(request, dict) else None
                who = (grant.get("namespace"), grant.get("workspace")) if isinstance(grant, dict) else None
                log.warning("signing refused (%s) for %s: %s", status, who, body["error"])
            self._reply(status, body)

        def do_GET(self) -> None:
            self._reply(404 if self.path != "/healthz" else 200, {})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    if tls is None:
        return _Server((host, port), Handler)
    server = _TLSServer((host, port), Handler)
    server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


HANDSHAKE_SECONDS = 30.0
# Connections served at once; more are closed at once (materializers retry), so no number of idle
# connections exhausts the signer's threads.
MAX_CONNECTIONS = 64


class _Server(ThreadingHTTPServer):
    """At most MAX_CONNECTIONS requests at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("%s connections open: closing one from %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _TLSServer(_Server):
    """The handshake happens in the request's thread, not the accepting one: a client that connects and
    says nothing (or speaks plain HTTP) holds up only itself."""

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as error:
            log.info("a TLS handshake from %s failed: %s", client_address[0], error)
            return
        super().finish_request(request, client_address)


def serve_in_background(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="grant-signer", daemon=True)
    thread.start()
    return thread
