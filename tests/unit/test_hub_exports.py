"""The hub's side of the airlock: only the requester sees and downloads an export, only while it is released,
only its own files; a notebook's request is held to its shape; `cleanroom export` reaches the hub through
the server's spool without a token."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tornado import web

from cleanroom.hub.exports import download_refusal, exports_from, exports_of, validated_request
from cleanroom.notebook import exports as spool

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ALICE = "alice@hospital.example"


def export(
    requester: str = ALICE, released: bool = True, expires: str = "2026-11-20T13:00:00Z"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "seg-abcde",
            "namespace": "prostate-ai",
            "creationTimestamp": "2026-11-20T10:00:00Z",
            "annotations": {"cleanroom.dev/requested-by": requester},
        },
        "spec": {"workspace": "seg", "files": ["results/metrics.csv"], "justification": "x" * 20},
        "status": {
            "phase": "Released" if released else "AwaitingApproval",
            "expiresAt": expires,
            "outbox": "exports/prostate-ai/seg-abcde/u/outbox/",
            "quarantine": {"files": [{"path": "results/metrics.csv", "digest": "sha256:00", "size": 3}]},
            "conditions": [{"type": "Released", "status": "True" if released else "False", "message": "ok"}],
        },
    }


def test_only_the_requester_sees_their_exports() -> None:
    assert [e.name for e in exports_of(ALICE, [export(), export("bob@hospital.example")])] == ["seg-abcde"]
    assert exports_of("bob@hospital.example", [export()]) == []


def test_a_session_sees_its_users_exports_from_its_own_workspace_only() -> None:
    other = export()
    other["spec"]["workspace"] = "another-project"
    items = [export(), other, export("bob@hospital.example")]
    assert [e.workspace for e in exports_from(ALICE, ("prostate-ai", "seg"), items)] == ["seg"]
    assert exports_from(ALICE, ("elsewhere", "seg"), items) == []


def test_a_download_is_for_the_requester_of_a_released_export_and_its_files_only() -> None:
    assert download_refusal(export(), ALICE, "results/metrics.csv", NOW) is None
    assert (
        download_refusal(export(), "bob@hospital.example", "results/metrics.csv", NOW)
        == "no export of yours has that name"
    )
    assert "not released" in str(download_refusal(export(released=False), ALICE, "results/metrics.csv", NOW))
    assert (
        download_refusal(export(expires="2026-11-20T11:00:00Z"), ALICE, "results/metrics.csv", NOW)
        == "the download time is over"
    )
    assert "not a file of this export" in str(download_refusal(export(), ALICE, "../../snapshots/x", NOW))


def test_a_notebook_request_is_held_to_its_shape() -> None:
    assert validated_request({"files": ["a.csv", "a.csv"], "justification": " " + "why " * 6}) == (
        ["a.csv"],
        "why why why why why why",
    )
    for bad in ([], {"files": [], "justification": "x" * 30}, {"files": ["a"], "justification": "short"},
                {"files": [1], "justification": "x" * 30}, {"files": ["a"] * 65, "justification": "x" * 30}):  # fmt: skip
        with pytest.raises(web.HTTPError):
            validated_request(bad)


def test_cleanroom_export_reaches_the_hub_through_the_servers_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []

    async def hub(method: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sent.append(body)
        return 201, {"name": "seg-abcde", "namespace": "prostate-ai"}

    monkeypatch.setattr(spool, "_hub", hub)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.csv").write_text("fold,dice\n1,0.87\n")
    ident = spool.write_request(tmp_path, ["results/metrics.csv"], "aggregate Dice per fold for table 2")
    (spool.spool(tmp_path) / "junk.request.json").write_text("not json")
    assert asyncio.run(spool.forward_pending(tmp_path)) == 1
    assert sent == [
        {"files": ["results/metrics.csv"], "justification": "aggregate Dice per fold for table 2"}
    ]
    assert spool.read_answer(tmp_path, ident) == {"name": "seg-abcde", "namespace": "prostate-ai"}
    assert "not a request" in json.dumps(spool.read_answer(tmp_path, "junk"))
    assert list(spool.pending(tmp_path)) == []
