"""A new pod's first request (the materializer's, the export copy's) waits out the moment before its pod's egress policy is programmed: on the
real node the copy Job's pod was refused a connection to the store at start ("Connection refused" in Ready
instead of the object that did not verify), and with restartPolicy Never each retry is a new pod with the
same window."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from cleanroom._clients.first_contact import read_first
from cleanroom.snapshots.grant import GrantRefused, fetch
from cleanroom.snapshots.store import SnapshotError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Opener:
    """Refuses ``refusals`` connections, then answers."""

    def __init__(self, refusals: int, error: Exception | None = None) -> None:
        self.refusals, self.error, self.calls = refusals, error, 0

    def open(self, url: str, timeout: float) -> object:
        self.calls += 1
        if self.calls <= self.refusals:
            raise self.error or urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        return _Response(b'{"kind": "grant"}')


class _Response:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self) -> bytes:
        return self.body


def test_refused_connections_at_start_are_retried_until_the_store_answers() -> None:
    clock = Clock()
    opener = Opener(refusals=5)
    body = read_first(opener, "https://s3/g", patience=45, sleep=clock.sleep, monotonic=lambda: clock.now)  # type: ignore[arg-type]
    assert body == b'{"kind": "grant"}' and opener.calls == 6 and clock.now == 5


def test_a_store_that_stays_unreachable_fails_after_the_settle_time_saying_so() -> None:
    clock = Clock()
    opener = Opener(refusals=10_000)
    with pytest.raises(urllib.error.URLError, match="refused"):
        read_first(opener, "https://s3/g", patience=45, sleep=clock.sleep, monotonic=lambda: clock.now)  # type: ignore[arg-type]
    assert 44 <= clock.now <= 45


@pytest.mark.parametrize("code", [403, 404])
def test_an_answer_from_the_store_is_final_at_once(code: int) -> None:
    clock = Clock()
    error = urllib.error.HTTPError("https://s3/g", code, "no", {}, None)  # type: ignore[arg-type]
    opener = Opener(refusals=1, error=error)
    with pytest.raises(urllib.error.HTTPError):
        read_first(opener, "https://s3/g", patience=45, sleep=clock.sleep, monotonic=lambda: clock.now)  # type: ignore[arg-type]
    assert clock.slept == []
    # The materializer turns the store's answer into its own refusal at once.
    with pytest.raises(GrantRefused if code == 403 else SnapshotError):
        fetch("https://s3/g", "the grant document", Opener(refusals=1, error=error), first=True)  # type: ignore[arg-type]


@pytest.fixture
def late_server() -> Iterator[tuple[str, threading.Event]]:
    """A real HTTP server that starts listening only when told (the policy being programmed)."""
    ready = threading.Event()
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # refuse until ready

    def serve() -> None:
        ready.wait()
        live = http.server.HTTPServer(("127.0.0.1", port), _Grant)
        live.timeout = 5
        live.handle_request()
        live.server_close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/grant", ready
    ready.set()
    thread.join(timeout=10)


class _Grant(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"kind": "grant"}')

    def log_message(self, *args: object) -> None:
        return None


def test_a_real_socket_refused_at_first_is_reached_once_it_listens(
    late_server: tuple[str, threading.Event],
) -> None:
    url, ready = late_server
    attempts = []

    def sleep(seconds: float) -> None:
        attempts.append(seconds)
        if len(attempts) == 2:
            ready.set()

    assert read_first(urllib.request.build_opener(), url, patience=45, sleep=sleep) == b'{"kind": "grant"}'
    assert len(attempts) >= 2


def test_the_first_request_to_the_grant_signer_waits_out_the_policy_too() -> None:
    """Seen on the real node: a shared copy's materializer pod was refused by the signer (whose ingress policy
    learns a new pod's address after it starts) and failed, a second pod did the copy. The first batch asked
    of the signer is a first contact like the store's; later batches are not retried."""
    from cleanroom.snapshots.grant import ObjectURLs

    class Signer(Opener):
        def open(self, url: str, timeout: float) -> object:  # type: ignore[override]
            self.calls += 1
            if self.calls <= self.refusals:
                raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
            return _Response(b'{"urls": {"sha256:a": "https://s3/a"}, "expiresAt": "x"}')

    opener = Signer(refusals=2)
    urls = ObjectURLs({"signer": "https://signer:8443"}, ["sha256:a"], opener)  # type: ignore[arg-type]
    assert urls["sha256:a"] == "https://s3/a" and opener.calls == 3  # two refusals waited out (2 s)
