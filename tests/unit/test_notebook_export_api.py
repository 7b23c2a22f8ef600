"""JupyterLab's "Request export…" reaches the hub only through the single-user server's `api/cleanroom/exports`,
which takes the same checks and the same call as `cleanroom export`: a real jupyter_server (its own
authentication) in front of a stand-in hub that records what reaches it. Attacks first: paths outside the home,
links out of it (a linked file, a linked folder), an empty justification, a caller without the server's
credentials; none of them reaches the hub."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.serverapp import ServerApp
from tornado import httpclient, web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from cleanroom.notebook import audit_client, export_api, exports, guard

JUSTIFICATION = "Dice per fold of the segmentation model, for table 2 of the paper"
BROWSER_TOKEN = "the-browsers-credential"
HUB_TOKEN = "the-servers-hub-token"


class FakeHub(web.RequestHandler):
    """The hub's `/hub/api/cleanroom/exports`, recording each request that reaches it."""

    def initialize(self, seen: list[tuple[str, str, Any]]) -> None:
        self.seen = seen

    def post(self) -> None:
        self.seen.append(
            ("POST", self.request.headers.get("Authorization", ""), json.loads(self.request.body))
        )
        self.set_status(201)
        self.finish({"name": "segmentation-alice-x7k2p", "namespace": "team-sample"})

    def get(self) -> None:
        self.seen.append(("GET", self.request.headers.get("Authorization", ""), None))
        self.finish(
            {"exports": [{"name": "segmentation-alice-x7k2p", "phase": "Checking", "files": ["a.csv"]}]}
        )


def _serve(app: web.Application) -> tuple[HTTPServer, int]:
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


Call = Callable[..., Awaitable[httpclient.HTTPResponse]]


def run_with_server(
    home: Path, scenario: Callable[[Call, list[tuple[str, str, Any]]], Awaitable[None]]
) -> None:
    """A single-user server over ``home`` whose identity provider accepts BROWSER_TOKEN, with the export
    route as the extension adds it, and a hub that answers it."""

    async def main() -> None:
        seen: list[tuple[str, str, Any]] = []
        hub, hub_port = _serve(web.Application([(r"/hub/api/cleanroom/exports", FakeHub, {"seen": seen})]))
        audit_client.configure({"JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api"}, HUB_TOKEN)
        app = ServerApp()
        app.initialize(
            argv=[
                f"--ServerApp.root_dir={home}",
                f"--ServerApp.runtime_dir={home.parent / 'runtime'}",
                f"--IdentityProvider.token={BROWSER_TOKEN}",
                "--ServerApp.open_browser=False",
            ],
            find_extensions=False,
            new_httpserver=False,
        )
        app.web_app.add_handlers(".*$", export_api.handlers(str(home)))
        server, port = _serve(app.web_app)

        async def call(method: str, body: Any = None, token: str = BROWSER_TOKEN) -> httpclient.HTTPResponse:
            headers = {"Authorization": f"token {token}"} if token else {}
            return await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{port}/{export_api.ROUTE}",
                method=method,
                headers=headers,
                body=None if body is None else json.dumps(body),
                raise_error=False,
            )

        try:
            await scenario(call, seen)
        finally:
            server.stop()
            hub.stop()

    asyncio.run(main())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(audit_client, "_hub", {})
    home = tmp_path / "home"
    (home / "results").mkdir(parents=True)
    (home / "results" / "metrics.csv").write_text("fold,dice\n1,0.87\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "slice.dcm").write_bytes(b"\0" * 128 + b"DICM")
    # Links a modeller (or a kernel) can make in their own home, each pointing out of it.
    (home / "linked-folder").symlink_to(outside, target_is_directory=True)
    (home / "linked-file.dcm").symlink_to(outside / "slice.dcm")
    (home / "results" / "slice-link.dcm").symlink_to(outside / "slice.dcm")
    return home


@pytest.mark.parametrize(
    ("files", "why"),
    [
        (["../outside/slice.dcm"], "give a path inside your home folder"),
        (["results/../../outside/slice.dcm"], "give a path inside your home folder"),
        (["/etc/passwd"], "give a path inside your home folder"),
        ([""], "give a path inside your home folder"),
        (["results//metrics.csv"], "give a path inside your home folder"),
        (["results/metrics.csv\n"], "give a path inside your home folder"),
        (["linked-folder/slice.dcm"], "linked-folder is a link"),
        (["linked-file.dcm"], "linked-file.dcm is a link"),
        (["results/slice-link.dcm"], "slice-link.dcm is a link"),
        (["results"], "not a regular file"),
        (["results/absent.csv"], "no such file"),
        (["results/metrics.csv", "linked-folder/slice.dcm"], "linked-folder is a link"),
        ([], "ask for 1 to 64 files"),
        (["results/metrics.csv"] * 65, "ask for 1 to 64 files"),
    ],
)
def test_files_that_are_not_the_homes_own_are_refused_before_the_hub(
    home: Path, files: list[str], why: str
) -> None:
    async def scenario(call: Call, seen: list[tuple[str, str, Any]]) -> None:
        response = await call("POST", {"files": files, "justification": JUSTIFICATION})
        assert response.code == 400, response.body
        assert why in json.loads(response.body)["error"]
        assert seen == []

    run_with_server(home, scenario)


@pytest.mark.parametrize("justification", ["", "   ", "too short to say", " " * 30 + "x"])
def test_an_empty_or_token_justification_is_refused_before_the_hub(home: Path, justification: str) -> None:
    async def scenario(call: Call, seen: list[tuple[str, str, Any]]) -> None:
        response = await call("POST", {"files": ["results/metrics.csv"], "justification": justification})
        assert response.code == 400, response.body
        assert "justification" in json.loads(response.body)["error"]
        assert seen == []

    run_with_server(home, scenario)


@pytest.mark.parametrize("body", [None, [], {"files": "results/metrics.csv", "justification": JUSTIFICATION},
                                  {"files": [1], "justification": JUSTIFICATION}, {"files": ["a"]}])  # fmt: skip
def test_a_body_that_is_not_a_request_is_refused(home: Path, body: Any) -> None:
    async def scenario(call: Call, seen: list[tuple[str, str, Any]]) -> None:
        response = await call("POST", body if body is not None else "not json")
        assert response.code == 400, response.body
        assert seen == []

    run_with_server(home, scenario)


def test_a_caller_without_the_servers_credentials_gets_nothing(home: Path) -> None:
    """A kernel holds neither the browser's sign-in nor the hub token: the route answers it nothing."""

    async def scenario(call: Call, seen: list[tuple[str, str, Any]]) -> None:
        for token in ("", HUB_TOKEN[::-1]):
            posted = await call(
                "POST", {"files": ["results/metrics.csv"], "justification": JUSTIFICATION}, token
            )
            listed = await call("GET", token=token)
            assert posted.code == 403 and listed.code == 403, (posted.body, listed.body)
        assert seen == []

    run_with_server(home, scenario)


def test_a_request_from_jupyterlab_reaches_the_hub_as_this_server_and_its_answer_comes_back(
    home: Path,
) -> None:
    async def scenario(call: Call, seen: list[tuple[str, str, Any]]) -> None:
        response = await call(
            "POST",
            {"files": ["results/metrics.csv", "results/metrics.csv"], "justification": f"  {JUSTIFICATION} "},
        )
        assert response.code == 201, response.body
        assert json.loads(response.body) == {"name": "segmentation-alice-x7k2p", "namespace": "team-sample"}
        listed = await call("GET")
        assert listed.code == 200, listed.body
        assert json.loads(listed.body)["exports"][0]["phase"] == "Checking"
        # Only files and why: the hub takes the user and the Workspace from the server's own token.
        assert seen == [
            (
                "POST",
                f"token {HUB_TOKEN}",
                {"files": ["results/metrics.csv"], "justification": JUSTIFICATION},
            ),
            ("GET", f"token {HUB_TOKEN}", None),
        ]

    run_with_server(home, scenario)


def test_cleanroom_export_and_jupyterlab_share_one_check(home: Path) -> None:
    """The spool (the kernel's to write) is checked by the server as the route is: a request a kernel
    writes there for a link out of the home never reaches the hub."""
    sent: list[Any] = []

    async def hub(method: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        sent.append(body)
        return 201, {"name": "n", "namespace": "ns"}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exports, "_hub", hub)
        ident = exports.write_request(home, ["linked-folder/slice.dcm"], JUSTIFICATION)
        asyncio.run(exports.forward_pending(home))
    assert sent == []
    assert "linked-folder is a link" in exports.read_answer(home, ident)["error"]  # type: ignore[index]


def test_the_route_is_on_the_servers_allow_list_and_nothing_beside_it() -> None:
    assert guard.refused_route(export_api.ROUTE) is None
    for path in (
        "api/cleanroom",
        "api/cleanroom/exports/x",
        "api/cleanroom/audit",
        "api/cleanroom/exports.json",
    ):
        assert guard.refused_route(path) is not None, path


def test_links_are_looked_at_not_followed(home: Path) -> None:
    """The check never opens the target: a link to a file the server may not read is refused the same."""
    assert exports.refused_path(home, "results/metrics.csv") is None
    os.chmod(home.parent / "outside", 0)
    try:
        assert "is a link" in str(exports.refused_path(home, "linked-folder/slice.dcm"))
    finally:
        os.chmod(home.parent / "outside", 0o755)
