"""What the single-user server refuses, decided from paths and bytes alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jupyter_server.auth.identity import IdentityProvider
from jupyter_server.serverapp import ServerApp

from cleanroom.hub.names import server_name
from cleanroom.hub.workspace_view import start_failed, view, visible_to
from cleanroom.notebook import guard
from cleanroom.notebook.extension import keep_token_out_of_runtime_files

CONFIG = Path(guard.__file__).parent / "jupyter_config"


@pytest.mark.parametrize(
    "path",
    [
        "files/data/x.dcm",
        "/files/notes.txt",
        "view/a.png",
        "nbconvert/html/n.ipynb",
        "api/nbconvert/x",
        "api/nbconvert",
        "directories/data",
    ],
)
def test_download_routes_are_refused_as_downloads(path: str) -> None:
    refusal = guard.refused_route(path)
    assert refusal and refusal.action == "download.refused"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "lab",
        "lab/",
        "lab/tree/notes/a.ipynb",
        "lab/workspaces/auto-x/tree/a.ipynb",
        "lab/api/settings/@jupyterlab/notebook-extension:tracker",
        "lab/api/workspaces/default",
        "lab/api/translations/en",
        "lab/api/themes/@jupyterlab/theme-light-extension/index.css",
        "lab/extensions/@jupyter-widgets/jupyterlab-manager/static/remoteEntry.js",
        "static/lab/main.efd36b46f3b45eb8.js",
        "api",
        "api/me",
        "api/status",
        "api/contents",
        "api/contents/data",
        "api/contents/notes/a.ipynb/checkpoints",
        "api/kernels",
        "api/kernels/8c6a/channels",
        "api/sessions/42",
        "api/terminals",
        "terminals/websocket/1",
        "api/kernelspecs",
        "kernelspecs/python3/logo-64x64.png",
        "kernelspecs/python3/logo-svg.svg",
        "api/events/subscribe",
        "oauth_callback",
        "logout",
    ],
)
def test_the_routes_jupyterlab_needs_are_allowed(path: str) -> None:
    assert guard.refused_route(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "tree/files",
        "api/files-ish",
        "api/spec.yaml",
        "api/config/notebook",
        "lab/api/extensions",
        "lab/api/plugins",
        "lab/api/build",
        "lab/api/licenses",
        "lab/api/news",
        "custom/custom.js",
        "nbextensions/leak/x.js",
        "lsp/ws/python",
        # A kernel spec's directory holds whatever is copied there; only its logos are served.
        "kernelspecs/leak/scan.dcm",
        "kernelspecs/python3/kernel.json",
        "kernelspecs/python3/logo-64x64.png/../scan.dcm",
        "api/kernelspecs-and-more",
    ],
)
def test_every_other_route_is_refused_and_audited_as_such(path: str) -> None:
    refusal = guard.refused_route(path)
    assert refusal and refusal.action == "route.refused" and "allow-list" in refusal.reason


def test_dataset_files_are_refused_even_through_a_symlink_in_home(tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    home.mkdir()
    (data / "labels.csv").write_text("id,grade\n1,3\n")
    (home / "innocent.csv").symlink_to(data / "labels.csv")
    (home / "notes.py").write_text("print('hi')\n")
    assert "dataset files" in (guard.refused_read(home / "innocent.csv", data) or "")
    assert guard.refused_copy(home / "innocent.csv", data)
    assert guard.refused_read(home / "notes.py", data) is None
    # A sibling whose name starts with the dataset's is not inside it.
    assert not guard.is_under(tmp_path / "data-copy" / "x", data)


def test_the_whole_file_is_checked_so_a_text_prefix_does_not_pass_a_binary_tail(tmp_path: Path) -> None:
    prefixed = tmp_path / "prefixed.bin"
    prefixed.write_bytes(b"a" * 8192 + b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert guard.refused_read(prefixed, tmp_path / "data") == guard.BINARY_REFUSED
    late_nul = tmp_path / "late-nul.txt"
    late_nul.write_bytes(b"x" * (3 << 20) + b"\0")
    assert guard.refused_read(late_nul, tmp_path / "data") == guard.BINARY_REFUSED


def test_binary_files_are_refused_text_is_not() -> None:
    assert not guard.is_text([b"\x93NUMPY\x01\x00v\x00{'descr'"])
    assert not guard.is_text([b"\x89PNG\r\n\x1a\n\x00\x00"])
    assert guard.is_text([b'{"cells": []}'])
    # A multi-byte character split between two reads is still text; one cut at the end of the file is not.
    e = "é".encode()
    assert guard.is_text([b"caf" + e[:1], e[1:] + b" au lait"])
    assert not guard.is_text([b"caf" + e[:1]])


def test_no_base64_content_and_no_nul_in_text_leave_through_the_contents_model() -> None:
    assert guard.refused_model({"type": "file", "format": "base64", "content": "AAAA"})
    assert guard.refused_model({"type": "file", "format": "text", "content": "a\0b"})
    assert guard.refused_model({"type": "file", "format": "text", "content": "print(1)"}) is None
    assert guard.refused_model({"type": "notebook", "format": "json", "content": {"cells": []}}) is None


def test_the_shipped_lab_config_disables_exactly_the_guarded_plugins() -> None:
    page_config = json.loads((CONFIG / "labconfig" / "page_config.json").read_text())
    assert page_config["disabledExtensions"] == {name: True for name in guard.DISABLED_LAB_PLUGINS}
    server = json.loads((CONFIG / "jupyter_server_config.json").read_text())["ServerApp"]
    assert server["jpserver_extensions"] == {"cleanroom.notebook": True}
    assert server["contents_manager_class"].endswith("GuardedContentsManager")


def test_server_names_are_jupyterhub_safe_slugs_unique_per_namespace() -> None:
    from jupyterhub.slugs import is_valid_safe_slug

    names = [
        server_name("team-a", "seg"),
        server_name("team-b", "seg"),
        server_name("team-a", "a-very-long-workspace-name-for-prostate-mri.v2"),
        server_name("t", "9lives"),
    ]
    assert all(is_valid_safe_slug(n) for n in names), names
    assert len(set(names)) == len(names)
    assert server_name("team-a", "seg") == server_name("team-a", "seg")


def item(
    namespace: str,
    name: str,
    users: list[str],
    ready: str = "False",
    reason: str = "Pending",
    generation: int = 1,
) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"namespace": namespace, "name": name, "generation": generation},
        "spec": {"users": users, "dataset": {"name": "ct"}, "running": True},
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready, "reason": reason, "message": "m", "observedGeneration": 1}
            ]
        },
    }


def test_a_user_sees_exactly_the_workspaces_that_list_them() -> None:
    items = [
        item("a", "one", ["Alice@Hospital.example"]),
        item("a", "two", ["bob@x"]),
        item("b", "one", ["alice@hospital.example", "bob@x"]),
    ]
    assert set(visible_to("alice@hospital.example", items)) == {
        server_name("a", "one"),
        server_name("b", "one"),
    }


def test_ready_must_be_for_the_current_generation_and_some_reasons_end_a_start() -> None:
    assert view(item("a", "w", [], ready="True")).ready
    assert not view(item("a", "w", [], ready="True", generation=2)).ready
    assert start_failed(item("a", "w", [], reason="AccessDenied"))
    assert start_failed(item("a", "w", [], reason="Unschedulable")) is None


def test_the_servers_runtime_files_hold_no_token_for_a_kernel_to_read(tmp_path: Path) -> None:
    """Under JupyterHub the server's token is the hub token; kernels read the runtime directory (their
    connection files), where jupyter_server writes its info file with the token in it."""
    app = ServerApp(runtime_dir=str(tmp_path), root_dir=str(tmp_path))
    app.identity_provider = IdentityProvider(token="the-hub-token")
    keep_token_out_of_runtime_files(app)
    app.write_server_info_file()
    assert json.loads(Path(app.info_file).read_text())["token"] == ""
    assert "the-hub-token" not in "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert app.no_browser_open_file is True
