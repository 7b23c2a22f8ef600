"""The byte meter's edge: a reverse proxy in front of the single-user server that counts every byte it
hands to the browser (HTTP responses, headers included, and websocket messages) against `meter.ByteMeter`,
refuses what does not fit (HTTP 429, or the websocket closed with 1008), and reports the session's totals
and its refusals to the audit trail through the hub's audit intake.

It runs as its own container of the notebook pod (`cleanroom notebook-meter`), under another user than
the notebook's, with the server listening on localhost only behind it: the user's code can neither
change it nor reach the browser around it. Bytes from the browser to the server are not metered: they
bring data in, not out.

A restart does not renew the budget. The meter starts with what its Workspace's window has already spent:
from the hub's ledger (`hub_ledger`, reported every few seconds and at the end of the session; it outlives
the pod) and from its own state file (on a volume only the meter's container mounts, written before the
bytes it records are sent; it outlives a killed meter container). Until the hub has answered, it answers
503 and sends nothing (the hub waits for a server that answers 503 as for one that does not answer yet).
At the end of a session it grants nothing more, then reports its ledger and its final totals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tornado import httputil, routing, web, websocket
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError

from cleanroom.notebook import audit_client, hub_ledger
from cleanroom.notebook.meter import Budget, ByteMeter

LOGGER = logging.getLogger("cleanroom.notebook.meter")
# Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection, not to the message.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer"}
    | {"transfer-encoding", "upgrade"}
)
_POLICY_VIOLATION = 1008
MAX_BODY_BYTES = 256 * 1024 * 1024
# How often the ledger goes to the hub while it changes, and how long to wait before asking the hub again.
LEDGER_SECONDS = 10.0
LEARN_RETRY_SECONDS = 2.0
# The state file is written this far ahead of the bytes sent, so it is not written for every chunk; a
# killed meter counts these bytes as spent though they may not have been sent.
WRITE_AHEAD_BYTES = 256 * 1024


class BudgetSpent(Exception):
    """Raised from the body callback to stop reading a response the browser will not get."""


class _QuietBudgetSpent(logging.Filter):
    """Tornado logs any exception a body callback raises as uncaught; this one is how we stop reading."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BudgetSpent))


logging.getLogger("tornado.application").addFilter(_QuietBudgetSpent())


@dataclass
class MeterState:
    meter: ByteMeter
    upstream: str  # http://127.0.0.1:PORT of the single-user server
    report: Callable[[str, str, str, str], None]  # (action, path, reason, outcome)
    clock: Callable[[], float] = time.time
    # Whether the window's spent bytes are known (the hub's ledger read); until then nothing is sent.
    known: bool = True
    # The meter's own record of its ledger, on a volume only its container mounts (None: kept in memory).
    state_file: Path | None = None
    _covered: int = 0  # bytes sent that the state file already counts

    def take(self, wanted: int) -> int:
        """Grant up to ``wanted`` bytes (`ByteMeter.take`), recorded in the state file before they are sent."""
        now = self.clock()
        granted = self.meter.take(now, wanted)
        if granted and self.state_file is not None and self.meter.totals.sent > self._covered:
            write_state(self.state_file, self.meter.ledger(now, ahead=WRITE_AHEAD_BYTES))
            self._covered = self.meter.totals.sent + WRITE_AHEAD_BYTES
        return granted

    def refused(self, path: str, wanted: int, what: str) -> None:
        if self.meter.closed:
            return  # the session is ending: not a refusal of the budget
        now = self.clock()
        self.meter.refuse(wanted)
        if self.meter.refusal_report_due(now):
            self.report(
                "meter.refused",
                path,
                f"{what} of {wanted} bytes withheld: the browser byte budget is spent; {self.meter.summary(now)}",
                "denied",
            )


def _header_bytes(headers: httputil.HTTPHeaders) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers.get_all())


class _Relay:
    """One upstream response on its way to the browser: the status line and headers as they arrive (refused
    whole when the size they announce does not fit), then the body a chunk at a time, each charged to the
    budget before it is written; ``refused`` once something did not fit."""

    def __init__(self, handler: ProxyHandler) -> None:
        self.handler = handler
        self.code = 502
        self.headers = httputil.HTTPHeaders()
        self.started = False
        self.refused = False

    def on_header(self, line: str) -> None:
        state = self.handler.state
        if line.startswith("HTTP/"):
            self.code = int(line.split(" ", 2)[1])
            self.headers = httputil.HTTPHeaders()
            return
        if line.strip():
            self.headers.parse_line(line)
            return
        # End of the headers: a response whose announced size does not fit is refused whole.
        length = int(self.headers.get("Content-Length", "0") or 0)
        wanted = length + _header_bytes(self.headers)
        if not state.meter.fits(state.clock(), wanted):
            self.refused = True
            state.refused(self.handler.request.path, wanted, "an HTTP response")
            raise BudgetSpent()

    def on_chunk(self, chunk: bytes) -> None:
        handler, state = self.handler, self.handler.state
        if self.refused:
            raise BudgetSpent()
        if not self.started:
            handler._start(self.headers, self.code)
            self.started = True
        granted = state.take(len(chunk))
        if granted < len(chunk):
            self.refused = True
            state.refused(handler.request.path, len(chunk) - granted, "the rest of an HTTP response")
            handler.write(chunk[:granted])
            raise BudgetSpent()
        handler.write(chunk)
        handler.flush()


class ProxyHandler(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self, state: MeterState) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:
        return None  # the server behind checks its own

    def compute_etag(self) -> None:
        return None

    async def _proxy(self) -> None:
        if not self.state.known:
            self._unknown()
            return
        request, relay = self.request, _Relay(self)
        response: HTTPResponse | None = None
        try:
            response = await AsyncHTTPClient().fetch(self._upstream(relay), raise_error=False)
        except BudgetSpent:
            pass
        except (HTTPClientError, OSError) as error:
            LOGGER.warning(
                "%s %s: the single-user server did not answer: %s", request.method, request.path, error
            )
        self.state.meter.totals.requests += 1
        if relay.refused:
            await self._stop_refused(relay.started)
            return
        if response is None:
            raise web.HTTPError(502, "the single-user server did not answer")
        if not relay.started:
            self._start(response.headers, response.code)
            # A response without a body (204, 304, HEAD): only its headers are charged.
        self.finish()

    def _upstream(self, relay: _Relay) -> HTTPRequest:
        """The browser's request as the single-user server gets it (hop-by-hop headers aside), its response
        streamed through ``relay``."""
        request = self.request
        headers = httputil.HTTPHeaders()
        for name, value in request.headers.get_all():
            if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                headers.add(name, value)
        return HTTPRequest(
            self.state.upstream + (request.uri or "/"),
            method=request.method,
            headers=headers,
            body=request.body if request.method in ("POST", "PUT", "PATCH") else None,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            decompress_response=False,
            header_callback=relay.on_header,
            streaming_callback=relay.on_chunk,
            connect_timeout=10,
            request_timeout=3600,
        )

    async def _stop_refused(self, started: bool) -> None:
        if started:
            # Headers and part of the body are out: send what was granted, then drop the connection
            # (the only way to stop a response whose status is already sent).
            with contextlib.suppress(StreamClosedError):
                await self.flush()
            if self.request.connection is not None:
                self.request.connection.close()  # type: ignore[attr-defined]
            return
        self._refuse()

    def _start(self, headers: httputil.HTTPHeaders, code: int) -> None:
        """The upstream status and headers, as they are (hop-by-hop ones aside), charged to the budget."""
        self.state.take(_header_bytes(headers))
        self._headers = httputil.HTTPHeaders()
        for name, value in headers.get_all():
            if name.lower() not in _HOP_BY_HOP:
                self._headers.add(name, value)
        self.set_status(code)

    def _refuse(self) -> None:
        now = self.state.clock()
        retry = self.state.meter.seconds_until(now, 1)
        self.clear()
        self.set_status(429)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Retry-After", str(int(retry) + 1))
        self.finish(
            "429 Too Many Requests: this workspace's byte budget for the browser "
            f"({self.state.meter.budget.describe()}) is spent. It frees up over the hour; "
            "everything stays in the workspace meanwhile.\n"
        )

    def _unknown(self) -> None:
        self.set_status(503)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Retry-After", str(int(LEARN_RETRY_SECONDS)))
        self.finish("503: the byte meter is reading this workspace's spent budget from the hub; try again.\n")

    get = post = put = patch = delete = head = options = _proxy


class WebSocketProxy(websocket.WebSocketHandler):
    def initialize(self, state: MeterState) -> None:
        self.state = state
        self.upstream: websocket.WebSocketClientConnection | None = None

    def check_origin(self, origin: str) -> bool:
        return True  # the server behind checks Origin against Host, both forwarded unchanged

    async def prepare(self) -> None:
        if not self.state.known:
            raise web.HTTPError(503, "the byte meter does not know the spent budget yet")
        request = self.request
        url = self.state.upstream.replace("http", "ws", 1) + (request.uri or "/")
        headers = httputil.HTTPHeaders()
        for name in ("Cookie", "Origin", "Host", "Authorization", "User-Agent", "X-XSRFToken"):
            if name in request.headers:
                headers[name] = request.headers[name]
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            self.upstream = await websocket.websocket_connect(
                HTTPRequest(url, headers=headers, connect_timeout=10, request_timeout=30),
                subprotocols=protocols or None,
                max_message_size=MAX_BODY_BYTES,
            )
        except HTTPClientError as error:
            raise web.HTTPError(error.code, "the single-user server refused the websocket") from None
        except OSError as error:
            raise web.HTTPError(502, f"the single-user server did not answer: {error}") from None

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return self.upstream.selected_subprotocol if self.upstream else None

    def open(self, *args: str, **kwargs: str) -> None:
        self._relay_task = asyncio.ensure_future(self._relay())

    async def _relay(self) -> None:
        assert self.upstream is not None
        state = self.state
        while True:
            message = await self.upstream.read_message()
            if message is None:
                self.close()
                return
            data = message if isinstance(message, bytes) else message.encode()
            granted = state.take(len(data))
            if granted < len(data):
                state.refused(self.request.path or "", len(data), "a websocket message")
                self.close(_POLICY_VIOLATION, "the browser byte budget of this workspace is spent")
                self.upstream.close()
                return
            state.meter.totals.frames += 1
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except websocket.WebSocketClosedError:
                self.upstream.close()
                return

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()


class _WebSocketUpgrade(routing.Matcher):
    def match(self, request: httputil.HTTPServerRequest) -> dict[str, Any] | None:
        return {} if request.headers.get("Upgrade", "").lower() == "websocket" else None


def make_app(state: MeterState) -> web.Application:
    return web.Application(
        [
            routing.Rule(_WebSocketUpgrade(), WebSocketProxy, {"state": state}),
            routing.Rule(routing.AnyMatches(), ProxyHandler, {"state": state}),
        ],
        websocket_ping_interval=30,
    )


def _listen_address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host or "0.0.0.0", int(port)


def read_state(path: Path) -> list[tuple[float, int]]:
    """The ledger a previous run of this meter left in its state file (none when there is no file)."""
    try:
        return [(float(start), int(size)) for start, size in json.loads(path.read_text())["slots"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as error:
        # Only this container writes the file; a torn one would be a bug, and ignoring it a fresh budget.
        raise ValueError(f"the meter's state file {path} is not a ledger: {error}") from None


def write_state(path: Path, slots: list[tuple[float, int]]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"slots": [[start, size] for start, size in slots]}))
    os.replace(partial, path)


async def learn_spent(state: MeterState) -> None:
    """Take the hub's ledger of this Workspace into the meter, asking until the hub answers."""
    while True:
        slots = await hub_ledger.load()
        if slots is not None:
            state.meter.restore(slots, state.clock())
            state.known = True
            LOGGER.info("spent in the current window: %d bytes", state.meter.used(state.clock()))
            return
        await asyncio.sleep(LEARN_RETRY_SECONDS)


async def report_ledger(state: MeterState, reported: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Report the ledger to the hub when it changed since ``reported``; what the hub now holds."""
    if not state.known or not hub_ledger.configured():
        return reported
    ledger = state.meter.ledger(state.clock())
    if ledger == reported:
        return reported
    return ledger if await hub_ledger.save(state.meter.budget.window, ledger) else reported


async def serve(
    listen: str, upstream: str, budget: Budget, report_seconds: float, state_file: str = ""
) -> None:
    """Run until SIGTERM or SIGINT, then report the session's ledger and totals."""
    if urlsplit(upstream).scheme != "http":
        raise ValueError(f"--upstream must be an http:// URL of the single-user server, got {upstream!r}")
    audit_client.configure()

    def report(action: str, path: str, reason: str, outcome: str) -> None:
        audit_client.send(action, path, reason, outcome)

    state = MeterState(ByteMeter(budget, time.time()), upstream.rstrip("/"), report)
    if state_file:
        state.state_file = Path(state_file)
        state.meter.restore(read_state(state.state_file), time.time())
    state.known = not hub_ledger.configured()
    learning = None if state.known else asyncio.ensure_future(learn_spent(state))
    host, port = _listen_address(listen)
    server = HTTPServer(make_app(state), max_body_size=MAX_BODY_BYTES, xheaders=False)
    server.listen(port, host)
    LOGGER.info("metering %s -> %s, budget %s", listen, upstream, budget.describe())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reported: list[tuple[float, int]] = []
    next_report = time.time() + report_seconds
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(LEDGER_SECONDS, report_seconds))
        if stop.is_set():
            break
        reported = await report_ledger(state, reported)
        if time.time() >= next_report:
            report("meter.session", "", state.meter.summary(time.time()), "success")
            next_report = time.time() + report_seconds
    # Nothing more goes out, so that the totals below are the session's last word.
    state.meter.close()
    server.stop()
    if learning is not None:
        learning.cancel()
    await report_ledger(state, reported)
    await audit_client.deliver("meter.session", "", "session ended: " + state.meter.summary(time.time()))
