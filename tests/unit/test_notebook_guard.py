"""What the single-user server refuses, decided from paths and bytes alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cleanroom.hub.names import server_name
from cleanroom.hub.workspace_view import start_failed, view, visible_to
from cleanroom.notebook import guard

CONFIG = Path(guard.__file__).parent / "jupyter_config"


@pytest.mark.parametrize(
    "path",
    [
        "files/data/x.dcm",
        "/files/notes.txt",
        "view/a.png",
        "nbconvert/html/n.ipynb",
        "api/nbconvert/x",
        "directories/data",
    ],
)
def test_download_routes_are_refused(path: str) -> None:
    assert guard.refused_route(path)


@pytest.mark.parametrize(
    "path", ["lab", "api/contents/data", "api/kernels", "api/sessions", "tree/files", "api/files-ish"]
)
def test_working_routes_are_not(path: str) -> None:
    assert guard.refused_route(path) is None


def test_dataset_files_are_refused_even_through_a_symlink_in_home(tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    home.mkdir()
    (data / "labels.csv").write_text("id,grade\n1,3\n")
    (home / "innocent.csv").symlink_to(data / "labels.csv")
    assert "dataset files" in (guard.refused_read(home / "innocent.csv", data, b"id,grade\n") or "")
    assert guard.refused_copy(home / "innocent.csv", data)
    assert guard.refused_read(home / "notes.py", data, b"print('hi')\n") is None
    # A sibling whose name starts with the dataset's is not inside it.
    assert not guard.is_under(tmp_path / "data-copy" / "x", data)


def test_binary_files_are_refused_text_is_not() -> None:
    assert guard.refused_read("/home/x.npy", "/data", b"\x93NUMPY\x01\x00v\x00{'descr'")
    assert guard.refused_read("/home/x.png", "/data", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert guard.refused_read("/home/n.ipynb", "/data", b'{"cells": []}') is None
    # Text whose last character is cut by the sniff window is still text.
    assert guard.refused_read("/home/u.txt", "/data", "é".encode() * 100 + "é".encode()[:1]) is None


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
