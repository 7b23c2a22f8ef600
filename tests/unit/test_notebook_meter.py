"""The byte meter: its accounting (pure, the clock passed in) and its proxy edge against a real tornado
server standing in for the single-user server (HTTP responses, streamed bodies, websockets)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tornado import web, websocket
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer

from cleanroom.notebook.meter import Budget, ByteMeter
from cleanroom.notebook.meter_server import MeterState, make_app

HOUR = 3600.0


def test_a_session_sends_at_most_the_budget_in_any_window() -> None:
    meter = ByteMeter(Budget(limit=1000, window=HOUR, slots=60), started=0.0)
    assert meter.take(0, 600) == 600
    assert meter.take(10, 600) == 400  # granted up to the budget, no further
    assert meter.take(20, 1) == 0 and meter.remaining(20) == 0
    assert meter.totals.sent == 1000


def test_the_window_slides_slot_by_slot() -> None:
    meter = ByteMeter(Budget(limit=1000, window=HOUR, slots=60), started=0.0)
    meter.take(0, 300)  # slot 0
    meter.take(30 * 60, 700)  # slot 30
    assert meter.remaining(HOUR - 1) == 0
    # Slot 0 leaves the window an hour after it began; slot 30 stays for another half hour.
    assert meter.remaining(HOUR) == 300
    assert meter.remaining(HOUR + 30 * 60) == 1000


def test_retry_after_says_when_enough_bytes_free_up() -> None:
    meter = ByteMeter(Budget(limit=1000, window=HOUR, slots=60), started=0.0)
    meter.take(0, 300)
    meter.take(30 * 60, 700)
    assert meter.seconds_until(40 * 60, 200) == pytest.approx(20 * 60)
    assert meter.seconds_until(40 * 60, 800) == pytest.approx(50 * 60)
    assert meter.seconds_until(40 * 60, 1001) == float("inf")
    assert meter.seconds_until(HOUR + 31 * 60, 1000) == 0


def test_refusals_are_counted_each_and_reported_at_most_once_a_minute() -> None:
    meter = ByteMeter(Budget(limit=10, window=HOUR), started=0.0)
    meter.take(0, 10)
    meter.refuse(500)
    assert meter.refusal_report_due(1)
    meter.refuse(500)
    assert not meter.refusal_report_due(30)
    assert not meter.refusal_report_due(90) or meter.totals.refused == 2
    assert not meter.refusal_report_due(200)  # nothing new since the last report
    assert meter.totals.refused == 2 and meter.totals.refused_bytes == 1000
    summary = meter.summary(200)
    assert "10 bytes to the browser" in summary and "2 refused" in summary


def test_a_budget_that_cannot_work_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="limit >= 1"):
        Budget(limit=0)
    with pytest.raises(ValueError, match="window > 0"):
        Budget(limit=1, window=0)


# --- the edge, against a real server ----------------------------------------------------------------


class _Text(web.RequestHandler):
    def get(self, size: str) -> None:
        self.finish("x" * int(size))


class _Streamed(web.RequestHandler):
    async def get(self, size: str) -> None:
        for _ in range(int(size) // 1000):
            self.write("y" * 1000)
            await self.flush()
        self.finish()


class _Echo(websocket.WebSocketHandler):
    def on_message(self, message: str | bytes) -> None:
        self.write_message("z" * int(message))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_with_meter(
    budget: int, body: Callable[[str, MeterState, list[tuple[str, ...]]], Awaitable[None]]
) -> None:
    async def main() -> None:
        upstream_port, meter_port = _port(), _port()
        upstream = HTTPServer(
            web.Application([(r"/text/(\d+)", _Text), (r"/stream/(\d+)", _Streamed), (r"/ws", _Echo)])
        )
        upstream.listen(upstream_port, "127.0.0.1")
        reports: list[tuple[str, ...]] = []
        state = MeterState(
            ByteMeter(Budget(limit=budget, window=HOUR), 0.0),
            f"http://127.0.0.1:{upstream_port}",
            lambda *event: reports.append(event),
            clock=lambda: 1.0,
        )
        meter = HTTPServer(make_app(state))
        meter.listen(meter_port, "127.0.0.1")
        try:
            await body(f"127.0.0.1:{meter_port}", state, reports)
        finally:
            meter.stop()
            upstream.stop()

    asyncio.run(main())


def test_responses_pass_until_the_budget_and_then_get_429_with_an_audit_report() -> None:
    async def body(address: str, state: MeterState, reports: list[tuple[str, ...]]) -> None:
        client = AsyncHTTPClient()
        first = await client.fetch(f"http://{address}/text/4000")
        assert first.code == 200 and first.body == b"x" * 4000
        refused = await client.fetch(f"http://{address}/text/8000", raise_error=False)
        assert refused.code == 429 and "Retry-After" in refused.headers
        assert state.meter.totals.sent <= 10_000 and state.meter.totals.refused == 1
        [(action, path, reason, outcome)] = reports
        assert (action, path, outcome) == ("meter.refused", "/text/8000", "denied")
        assert "budget" in reason and "4000" not in path

    run_with_meter(10_000, body)


def test_a_streamed_body_is_cut_at_the_budget() -> None:
    async def body(address: str, state: MeterState, reports: list[tuple[str, ...]]) -> None:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /stream/50000 HTTP/1.1\r\nHost: notebook\r\n\r\n")
        await writer.drain()
        raw = await reader.read()  # until the meter drops the connection
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200")
        assert 0 < raw.count(b"y") < 20_000 and len(raw) <= 20_000 + 64  # chunk framing aside
        assert state.meter.totals.sent == 20_000
        assert reports and reports[0][0] == "meter.refused"

    run_with_meter(20_000, body)


def test_websocket_messages_count_and_the_socket_closes_at_the_budget() -> None:
    async def body(address: str, state: MeterState, reports: list[tuple[str, ...]]) -> None:
        connection = await websocket.websocket_connect(f"ws://{address}/ws")
        received = 0
        for _ in range(10):
            await connection.write_message("3000")
            message: Any = await connection.read_message()
            if message is None:
                break
            received += len(message)
        assert 0 < received <= 10_000
        assert connection.close_code == 1008
        assert state.meter.totals.refused == 1 and reports[0][0] == "meter.refused"

    run_with_meter(10_000, body)
