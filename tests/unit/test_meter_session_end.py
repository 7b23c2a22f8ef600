"""Issue 15, the end of a session: the meter's last totals reach the audit trail, and a restarted meter keeps
the bytes already spent in its window (a user must not get a fresh budget by restarting the workspace).

Tried as the modeller would: the session is stopped the way the hub stops it (the spawner's stop returns,
and JupyterHub revokes the server's token at once), and the meter is restarted the way a stop and start
through the hub, or a killed meter container, restarts it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from cleanroom.hub import spawner as spawner_module
from cleanroom.hub import workspace_api
from cleanroom.hub.spawner import WorkspaceSpawner
from cleanroom.notebook.meter import Budget
from cleanroom.notebook.meter_server import serve

HOUR = 3600.0
TOKEN = "the-servers-own-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the hub's stop waits until the notebook pod is gone ----------------------------------------------------


class FakeCluster:
    """The Workspace and its notebook pod as the hub reads them: the pod goes some reads after the stop."""

    def __init__(self, pod_reads_until_gone: int) -> None:
        self.running = True
        self.reads_left = pod_reads_until_gone
        self.deleted_at: datetime | None = None

    def workspace(self, namespace: str, name: str) -> dict[str, Any]:
        return {
            "metadata": {"namespace": namespace, "name": name, "generation": 1},
            "spec": {"running": self.running, "users": ["alice"], "dataset": {"name": "d"}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Stopped"}]},
        }

    def set_running(self, namespace: str, name: str, running: bool, user: str) -> None:
        self.running = running
        if not running and self.deleted_at is None:
            self.deleted_at = datetime.now(UTC)

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.reads_left <= 0:
            return None
        self.reads_left -= 1
        metadata: dict[str, Any] = {"name": f"ws-{name}", "namespace": namespace}
        if self.deleted_at is not None:
            metadata["deletionTimestamp"] = (self.deleted_at + timedelta(seconds=30)).isoformat()
        return {"metadata": metadata}


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    fake = FakeCluster(pod_reads_until_gone=3)
    monkeypatch.setattr(workspace_api, "get_workspace", fake.workspace)
    monkeypatch.setattr(workspace_api, "set_running", fake.set_running)
    monkeypatch.setattr(workspace_api, "delete_session_settings", lambda namespace, name: None)
    monkeypatch.setattr(workspace_api, "get_notebook_pod", fake.pod, raising=False)
    monkeypatch.setattr(spawner_module, "record", lambda *args, **kwargs: None)
    yield fake


def _spawner() -> WorkspaceSpawner:
    c = Config()
    c.WorkspaceSpawner.poll_seconds = 0.01
    spawner = WorkspaceSpawner(config=c, user=SimpleNamespace(name="alice", escaped_name="alice"))
    spawner._workspace = ("team-a", "seg")
    return spawner


def test_the_hubs_stop_returns_only_once_the_notebook_pod_is_gone(cluster: FakeCluster) -> None:
    """JupyterHub revokes the server's token as soon as stop returns: the meter in the pod, which reports its
    session's totals when the pod is told to stop, must still hold a valid token then."""
    asyncio.run(_spawner().stop())
    assert not cluster.running
    assert cluster.reads_left == 0, "stop returned while the notebook pod still existed"


def test_the_wait_for_the_pod_is_bounded(cluster: FakeCluster) -> None:
    cluster.reads_left = 10**9  # a pod that never goes (a stuck node): the stop still completes
    spawner = _spawner()
    spawner.stop_wait_seconds = 0.2
    started = time.monotonic()
    asyncio.run(spawner.stop())
    assert time.monotonic() - started < 5


def test_poll_says_running_while_the_stopped_workspaces_pod_is_still_terminating(
    cluster: FakeCluster,
) -> None:
    """A stop the operator makes (idle timeout, expiry, revocation): the hub keeps the server, and its token,
    until the pod and its meter are gone."""
    cluster.set_running("team-a", "seg", False, "operator")
    spawner = _spawner()
    assert asyncio.run(spawner.poll()) is None
    cluster.reads_left = 0
    assert asyncio.run(spawner.poll()) == 0


# --- a restarted meter keeps the spent budget ----------------------------------------------------------------


class _Text(web.RequestHandler):
    def get(self, size: str) -> None:
        self.finish("x" * int(size))


class FakeHub:
    """The hub's API as the meter reaches it: the audit intake and the meter's ledger, both for the server's
    own token only (the hub's real handlers are `hub.pages`; their store is `hub.meter_ledger`)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ledger: dict[str, Any] = {}
        hub = self

        class Audit(web.RequestHandler):
            def post(self) -> None:
                if self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403)
                hub.events.append(json.loads(self.request.body))
                self.set_status(201)

        class Ledger(web.RequestHandler):
            def get(self) -> None:
                if self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403)
                self.finish(hub.ledger or {"slots": []})

            def post(self) -> None:
                if self.request.headers.get("Authorization") != f"token {TOKEN}":
                    raise web.HTTPError(403)
                from cleanroom.hub.meter_ledger import merge

                body = json.loads(self.request.body)
                hub.ledger = merge(hub.ledger, body, time.time())
                self.finish(hub.ledger)

        self.app = web.Application(
            [(r"/hub/api/cleanroom/audit", Audit), (r"/hub/api/cleanroom/meter", Ledger)]
        )

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["action"] == action]


async def _answers(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def _fetch_until_known(url: str) -> Any:
    """A fetch as the browser makes it; while the meter loads the workspace's spent budget it answers 503."""
    for _ in range(100):
        response = await AsyncHTTPClient().fetch(url, raise_error=False)
        if response.code != 503:
            return response
        await asyncio.sleep(0.05)
    raise AssertionError("the meter never learnt the spent budget")


def test_a_restarted_meter_keeps_the_bytes_spent_in_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack: spend the budget, have the meter restarted (stop and start the workspace), spend it again."""
    hub = FakeHub()
    hub_port, upstream_port = _port(), _port()
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{hub_port}/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    codes: list[int] = []

    async def one_session(size: int) -> None:
        port = _port()
        meter = asyncio.ensure_future(
            serve(
                f"127.0.0.1:{port}",
                f"http://127.0.0.1:{upstream_port}",
                Budget(limit=10_000, window=HOUR),
                600,
            )
        )
        await _answers(port)
        codes.append((await _fetch_until_known(f"http://127.0.0.1:{port}/text/{size}")).code)
        signal.raise_signal(signal.SIGTERM)  # the kubelet stopping the meter's container
        await asyncio.wait_for(meter, 30)

    async def main() -> None:
        servers = [HTTPServer(hub.app), HTTPServer(web.Application([(r"/text/(\d+)", _Text)]))]
        servers[0].listen(hub_port, "127.0.0.1")
        servers[1].listen(upstream_port, "127.0.0.1")
        try:
            await one_session(9_000)
            await one_session(4_000)
        finally:
            for server in servers:
                server.stop()

    asyncio.run(main())
    assert codes[0] == 200
    assert codes[1] == 429, "the restarted meter handed out a fresh budget"
    # Each session's final totals reached the hub, the first with the bytes it sent.
    ended = [e for e in hub.actions("meter.session") if e["reason"].startswith("session ended")]
    assert len(ended) == 2 and ended[0]["reason"].startswith("session ended: 9"), ended


def test_a_killed_meter_container_restarts_with_the_bytes_its_state_file_recorded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The meter's container killed (out of memory, say): no last report to the hub, but its state file, on a
    volume only it mounts, was written before the bytes went out."""
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    upstream_port, state_file = _port(), str(tmp_path / "ledger.json")
    codes: list[int] = []

    async def one_run(size: int) -> None:
        port = _port()
        budget = Budget(limit=10_000, window=HOUR)
        meter = asyncio.ensure_future(
            serve(f"127.0.0.1:{port}", f"http://127.0.0.1:{upstream_port}", budget, 600, state_file)
        )
        await _answers(port)
        codes.append((await _fetch_until_known(f"http://127.0.0.1:{port}/text/{size}")).code)
        meter.cancel()  # SIGKILL: nothing after this line of the meter runs
        with pytest.raises(asyncio.CancelledError):
            await meter

    async def main() -> None:
        upstream = HTTPServer(web.Application([(r"/text/(\d+)", _Text)]))
        upstream.listen(upstream_port, "127.0.0.1")
        try:
            await one_run(9_000)
            await one_run(4_000)
        finally:
            upstream.stop()

    asyncio.run(main())
    assert codes == [200, 429]


# --- the ledgers themselves (pure) ---------------------------------------------------------------------------


def test_a_meter_restored_from_its_ledger_has_the_window_spent_and_nothing_older() -> None:
    from cleanroom.notebook.meter import ByteMeter

    budget = Budget(limit=1000, window=HOUR, slots=60)
    first = ByteMeter(budget, started=10 * HOUR)
    first.take(10 * HOUR, 300)
    first.take(10 * HOUR + 30 * 60, 500)
    ledger = first.ledger(10 * HOUR + 40 * 60)
    assert ledger == [(10 * HOUR, 300), (10 * HOUR + 30 * 60, 500)]
    second = ByteMeter(budget, started=10 * HOUR + 41 * 60)
    second.restore([*ledger, (10 * HOUR + 50 * 60, 10**6), (9 * HOUR, 10**6)], 10 * HOUR + 41 * 60)
    # Slots from the future (past the restart) and from before the window are not taken.
    assert second.remaining(10 * HOUR + 41 * 60) == 200
    assert second.remaining(11 * HOUR) == 500  # the first slot leaves the window on time
    # Restoring never lowers a slot.
    second.restore([(10 * HOUR + 30 * 60, 1)], 11 * HOUR)
    assert second.remaining(11 * HOUR) == 500


def test_a_closed_meter_grants_nothing() -> None:
    from cleanroom.notebook.meter import ByteMeter

    meter = ByteMeter(Budget(limit=1000), started=0.0)
    meter.close()
    assert meter.take(1, 10) == 0 and meter.totals.sent == 0


def test_the_hubs_ledger_keeps_each_slots_larger_count_and_refuses_what_is_not_a_ledger(
    tmp_path: Any,
) -> None:
    from cleanroom.hub.meter_ledger import InvalidLedger, LedgerFile, merge

    now = 100 * HOUR
    kept = merge({}, {"window": HOUR, "slots": [[now - 60, 500], [now - 2 * HOUR, 9]]}, now)
    assert kept == {"window": HOUR, "slots": [[now - 60, 500]]}  # older than the window: gone
    # A late or replayed report cannot lower a slot; a slot from far ahead is not believed.
    kept = merge(kept, {"window": HOUR, "slots": [[now - 60, 100], [now, 50], [now + HOUR, 10**9]]}, now)
    assert kept["slots"] == [[now - 60, 500], [now, 50]]
    for bad in ({"window": 0}, {"window": HOUR, "slots": [[now, -1]]}, {"window": HOUR, "slots": [["x", 1]]}):
        with pytest.raises(InvalidLedger):
            merge(kept, bad, now)
    store = LedgerFile(tmp_path / "ledger.json")
    store.update("team-a/seg", {"window": HOUR, "slots": [[now, 700]]}, now)
    assert LedgerFile(tmp_path / "ledger.json").get("team-a/seg")["slots"] == [[now, 700]]
    assert LedgerFile(tmp_path / "ledger.json").get("team-a/other")["slots"] == []


def test_the_hub_knows_a_running_servers_token_after_it_restarts() -> None:
    """JupyterHub keeps only a hash of a server's token; the hub's intake finds the server by the token, so a
    restarted hub must get it back from the spawner's state, and a stopped server's state holds none."""
    spawner = _spawner()
    spawner.api_token = "the-servers-own-token"
    restored = _spawner()
    restored._workspace = None
    restored.load_state(spawner.get_state())
    assert restored.api_token == "the-servers-own-token" and restored._workspace == ("team-a", "seg")
    spawner.clear_state()
    assert "api_token" not in spawner.get_state()
