"""What the hub's page says about each Workspace: the session's truth, and the snapshot, expiry, idle
deadline and GPU (workspace_view, pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cleanroom.hub.workspace_view import HubSession, Row, deadline, may_stop, row, view

ALICE, BOB = "alice@hospital.example", "bob@hospital.example"
DIGEST = "sha256:3f5e0c1a9b7d2e4f6a8c0b1d3e5f7a9c1b3d5e7f9a1c3e5d7f9b1a3c5e7d9f1b"


def workspace(
    *,
    running: bool = True,
    started_by: str = "",
    ready: str = "True",
    reason: str = "Running",
    message: str = "notebook running",
    observed_generation: int = 1,
    annotations: dict[str, str] | None = None,
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-a",
            "name": "seg",
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": {
            "users": [ALICE, BOB],
            "dataset": {"name": "sample-ct"},
            "purpose": "segmentation",
            "running": running,
            "resources": {"gpu": 1, "gpuType": "nvidia-a100-80gb"},
            "lifetime": {"expiresAfter": "168h", "idleTimeout": "2h"},
        },
        "status": {
            "startedBy": started_by,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": message,
                    "observedGeneration": observed_generation,
                }
            ],
            **status,
        },
    }


def shown(item: dict[str, Any], user: str = ALICE, session: HubSession = "none") -> Row:
    return row(view(item), user, session)


def test_your_own_running_session_opens_and_stops_even_when_this_hub_holds_no_record_of_it() -> None:
    # The sample Workspace (examples/workspace.yaml: running, created and so started by alice) read
    # "Running (another session)" with a Start button.
    mine = shown(workspace(started_by=ALICE))
    assert mine.state == "Running"
    assert mine.actions == ("open", "stop")
    assert "Running (another session)" not in mine.state


def test_user_names_compare_as_the_hub_writes_them() -> None:
    assert shown(workspace(started_by="Alice@Hospital.example")).actions == ("open", "stop")


def test_another_users_running_session_is_theirs_alone() -> None:
    theirs = shown(workspace(started_by=BOB))
    assert theirs.state == f"In use by {BOB}"
    assert theirs.actions == ()
    assert not may_stop(view(workspace(started_by=BOB)), ALICE)
    assert may_stop(view(workspace(started_by=BOB)), BOB)


def test_a_session_this_hub_serves_or_starts() -> None:
    assert shown(workspace(started_by=ALICE), session="ready") == Row("Running", "", ("open", "stop"))
    starting = shown(workspace(ready="False", reason="Materializing", message="copying"), session="starting")
    assert starting == Row("Starting", "Materializing: copying", ("progress", "cancel"))


def test_your_own_session_on_its_way_up_shows_progress_and_can_be_cancelled() -> None:
    coming = shown(workspace(started_by=ALICE, ready="False", reason="Unschedulable", message="no free GPU"))
    assert coming == Row("Starting", "Unschedulable: no free GPU", ("progress", "cancel"))


def test_a_ready_condition_of_an_older_generation_is_not_ready() -> None:
    assert shown(workspace(started_by=ALICE, observed_generation=0)).state == "Starting"


def test_a_stopped_workspace_and_one_nobody_has_started_offer_start() -> None:
    stopped = shown(workspace(running=False, started_by=ALICE, ready="False", reason="Stopped", message="m"))
    assert stopped == Row("Stopped", "Stopped: m", ("start",))
    assert not may_stop(view(workspace(running=False, started_by=ALICE)), ALICE)
    waiting = shown(workspace(ready="False", reason="WaitingForStart", message="sign in and start it"))
    assert waiting.actions == ("start",)


def test_a_workspace_that_cannot_start_offers_no_start_and_your_failed_session_can_be_stopped() -> None:
    expired = workspace(running=False, ready="False", reason="Expired", message="expired at X")
    assert shown(expired) == Row("Cannot start", "Expired: expired at X", ())
    failed = workspace(started_by=ALICE, ready="False", reason="MaterializeFailed", message="bad copy")
    assert shown(failed) == Row("Failed", "MaterializeFailed: bad copy", ("stop",))
    # Another user's failed session is no longer "in use".
    assert shown({**failed, "status": {**failed["status"], "startedBy": BOB}}).state == "Cannot start"


def test_each_workspace_shows_its_snapshot_expiry_idle_deadline_and_gpu() -> None:
    current = view(
        workspace(
            started_by=ALICE,
            snapshot={"digest": DIGEST, "shortDigest": "3f5e0c1a9b7d"},
            expiresAt="2026-12-09T10:00:00Z",
            startedAt="2026-12-02T08:00:00Z",
            lastActivity="2026-12-02T09:00:00Z",
            gpus=1,
            node="real-0",
        )
    )
    assert current.snapshot == "3f5e0c1a9b7d"
    assert current.expires_at == datetime(2026, 12, 9, 10, 0, tzinfo=UTC)
    # The last activity the server reported, plus idleTimeout 2h.
    assert current.idle_deadline == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    assert current.gpu == "1 x nvidia-a100-80gb (on real-0)"


def test_the_hubs_activity_annotation_moves_the_idle_deadline() -> None:
    current = view(
        workspace(
            started_by=ALICE,
            annotations={"cleanroom.dev/last-activity": "2026-12-02T10:30:00Z"},
            startedAt="2026-12-02T08:00:00Z",
            lastActivity="2026-12-02T09:00:00Z",
        )
    )
    assert current.idle_deadline == datetime(2026, 12, 2, 12, 30, tzinfo=UTC)


def test_a_workspace_not_running_has_no_idle_deadline_and_the_digest_alone_is_shortened() -> None:
    current = view(
        workspace(running=False, snapshot={"digest": DIGEST}, startedAt="2026-12-02T08:00:00Z", gpus=0)
    )
    assert current.idle_deadline is None
    assert current.snapshot == "3f5e0c1a9b7d"
    assert current.gpu == "1 x nvidia-a100-80gb"
    unstarted = view(workspace())
    assert (unstarted.snapshot, unstarted.expires_at, unstarted.idle_deadline) == ("", None, None)


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(2026, 12, 9, 10, 0, tzinfo=UTC), ("2026-12-09 10:00 UTC", "in 6d 23h")),
        (datetime(2026, 12, 2, 12, 30, tzinfo=UTC), ("2026-12-02 12:30 UTC", "in 1h 30m")),
        (datetime(2026, 12, 2, 11, 5, tzinfo=UTC), ("2026-12-02 11:05 UTC", "in 5m")),
        (datetime(2026, 12, 2, 10, 55, tzinfo=UTC), ("2026-12-02 10:55 UTC", "5m ago")),
    ],
)
def test_deadlines_read_as_a_time_and_a_distance(when: datetime, text: tuple[str, str]) -> None:
    assert deadline(when, datetime(2026, 12, 2, 11, 0, tzinfo=UTC)) == text
