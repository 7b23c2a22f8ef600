"""Every Workspace lifecycle transition is in the audit trail exactly once: ids derived from the uid and the
transition, recorded before the status that implies them, and deletions that no operator saw recorded at
start-up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cleanroom.api import Condition, WorkspacePhase, WorkspaceStatus
from cleanroom.audit import read_records, write_signing_key, writer
from cleanroom.handlers import _kube
from cleanroom.handlers import workspace as handler
from cleanroom.workspaces import Observed, Plan, WorkspaceSettings, plan_workspace, trail
from cleanroom.workspaces.lifecycle import snapshot_not_found

T1, T2 = "2026-11-01T12:00:00Z", "2026-11-01T13:00:00Z"


def body(uid: str = "uid-1", status: dict[str, Any] | None = None, name: str = "seg") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": uid, "generation": 1},
        "spec": {
            "dataset": {"name": "prostate", "snapshot": ""},
            "users": ["alice@hospital.example"],
            "purpose": "Train a lesion segmentation model",
            "image": "registry.example.org/cleanroom/notebook-cuda:2026.11",
        },
        **({"status": status} if status is not None else {}),
    }


def plan(phase: str, reason: str, started: str = "") -> Plan:
    return Plan(
        phase=WorkspacePhase(phase),
        conditions=(Condition("Ready", "True" if phase == "Running" else "False", reason, "m"),),
        status=WorkspaceStatus(started_at=started or None),
    )


def actions(found: list[trail.Transition]) -> list[str]:
    return [t.action for t in found]


def test_created_is_decided_before_the_first_status_and_never_after() -> None:
    [created] = trail.transitions(body(), plan("Pending", "DatasetNotFound"), "users: alice")
    assert (created.action, created.id) == ("workspace.created", trail.created_id("uid-1"))
    again = trail.transitions(body(), plan("Pending", "DatasetNotFound"), "users: alice")
    assert again == [created]  # a pass repeated after a crash: the same event, stored once
    judged = body(status={"observedGeneration": 1, "phase": "Pending"})
    assert trail.transitions(judged, plan("Pending", "DatasetNotFound")) == []
    assert trail.created_id("uid-2") != created.id  # a new Workspace of the same name is another one


def test_every_start_has_its_stop_even_when_the_pod_is_replaced() -> None:
    running = body(status={"observedGeneration": 1, "phase": "Running", "startedAt": T1})
    starting = body(status={"observedGeneration": 1, "phase": "Starting", "startedAt": T1})
    [started_1] = trail.transitions(starting, plan("Running", "Running", T1))
    # The pod is replaced: the first run stops (no stop was recorded for this before) ...
    [stopped_1] = trail.transitions(running, plan("Starting", "Starting", T1))
    assert stopped_1.action == "workspace.stopped"
    # ... and the second run starts with an id of its own.
    [started_2] = trail.transitions(starting, plan("Running", "Running", T2))
    assert started_2.action == "workspace.started" and started_2.id != started_1.id
    # The same transition judged again (a restart) has the same id.
    assert trail.transitions(starting, plan("Running", "Running", T1)) == [started_1]
    # Stopped by the user: the stop of that run, whichever pass records it.
    [stopped] = trail.transitions(running, plan("Stopped", "Stopped"))
    assert stopped.id == stopped_1.id
    # Deleted while running: its run stops (the same event) and it goes.
    assert [(t.action, t.id) for t in trail.deletion(running)] == [
        ("workspace.stopped", stopped_1.id),
        ("workspace.deleted", trail.deleted_id(trail.created_id("uid-1"))),
    ]


def test_a_workspace_deleted_while_no_operator_watched_is_found() -> None:
    def created(uid: str) -> dict[str, Any]:
        return {"id": trail.created_id(uid), "action": "workspace.created", "resources": {"workspace": uid}}

    events = [created("a"), created("b"), created("c")]
    events.append({"id": trail.deleted_id(trail.created_id("c")), "action": "workspace.deleted"})
    # Before this change ids were random: such an event cannot be matched to the cluster, so it is left.
    events.append({"id": str(uuid.uuid4()), "action": "workspace.created", "resources": {}})
    gone = trail.vanished(events, live_uids=["b"])
    assert [g.resources["workspace"] for g in gone] == ["a"]


@pytest.fixture
def local_trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    write_signing_key(tmp_path / "key.pem")
    monkeypatch.delenv("CLEANROOM_AUDIT_URL", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("CLEANROOM_AUDIT_DIR", str(tmp_path / "trail"))
    monkeypatch.setenv("CLEANROOM_AUDIT_SIGNING_KEY", str(tmp_path / "key.pem"))
    writer.reset()
    yield tmp_path / "trail"
    writer.reset()


def trail_actions(directory: Path) -> list[str]:
    return [r["event"]["action"] for r in read_records(directory)]


class Crash(Exception):
    pass


def test_a_crash_between_the_audit_and_the_status_loses_and_duplicates_nothing(
    local_trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patches: list[dict[str, Any]] = []

    def patch_status(_namespace: str, _name: str, status: dict[str, Any]) -> None:
        if not patches:
            patches.append({})
            raise Crash("the operator was killed here")
        patches.append(status)

    monkeypatch.setattr(_kube, "patch_workspace_status", patch_status)
    monkeypatch.setattr(handler.kopf, "event", lambda *_a, **_k: None)
    workspace = body()
    observed = Observed(now=datetime.now(UTC), dataset=None)
    pending = plan_workspace(workspace, observed, WorkspaceSettings())
    with pytest.raises(Crash):
        handler.carry_out(workspace, pending, observed)
    # The event is in the trail before the status that implies it was written.
    assert trail_actions(local_trail) == ["workspace.created"]
    handler.carry_out(workspace, pending, observed)  # the next pass, after the restart
    assert trail_actions(local_trail) == ["workspace.created"]
    assert patches[-1]["phase"] == "Pending"


def test_start_up_records_the_deletions_it_missed_once(
    local_trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for uid, name in (("uid-a", "kept"), ("uid-b", "gone")):
        writer.record(
            handler._audit.ACTOR,
            "workspace.created",
            {"workspace": name, "namespace": "team"},
            event_id=trail.created_id(uid),
        )

    class Listing:
        def list_cluster_custom_object(self, *_: Any) -> dict[str, Any]:
            return {"items": [{"metadata": {"uid": "uid-a"}}]}

    monkeypatch.setattr(_kube, "custom_objects", Listing)
    logs: list[str] = []

    class Logger:
        def info(self, message: str) -> None:
            logs.append(message)

        warning = info

    handler.reconcile_trail(logger=Logger())
    handler.reconcile_trail(logger=Logger())  # a second start-up adds nothing
    records = read_records(local_trail)
    deleted = [r["event"] for r in records if r["event"]["action"] == "workspace.deleted"]
    assert [d["resources"]["workspace"] for d in deleted] == ["gone"]
    assert "while no operator was running" in deleted[0]["reason"]


def test_a_run_of_a_workspace_deleted_while_no_operator_watched_is_stopped_at_start_up(
    local_trail: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_kube, "patch_workspace_status", lambda *_: None)
    monkeypatch.setattr(handler.kopf, "event", lambda *_a, **_k: None)
    observed = Observed(now=datetime.now(UTC), dataset=None)

    def run(uid: str, name: str, stop: bool) -> dict[str, Any]:
        handler.carry_out(body(uid, name=name), plan("Starting", "MaterializingSnapshot"), observed)
        starting = body(uid, {"observedGeneration": 1, "phase": "Starting"}, name)
        handler.carry_out(starting, plan("Running", "Running", T1), observed)
        running = body(uid, {"observedGeneration": 1, "phase": "Running", "startedAt": T1}, name)
        if stop:
            handler.carry_out(running, plan("Stopped", "Stopped"), observed)
        return running

    # Both are deleted while no operator runs: one was running then, the other had been stopped.
    was_running = run("uid-r", "running", stop=False)
    run("uid-s", "stopped", stop=True)

    class Listing:
        def list_cluster_custom_object(self, *_: Any) -> dict[str, Any]:
            return {"items": []}

    monkeypatch.setattr(_kube, "custom_objects", Listing)

    class Logger:
        def info(self, _message: str) -> None:
            pass

        warning = info

    handler.reconcile_trail(logger=Logger())
    handler.reconcile_trail(logger=Logger())  # a second start-up adds nothing
    events = [r["event"] for r in read_records(local_trail)]
    by_workspace = {
        name: [e["action"] for e in events if e["resources"]["workspace"] == name]
        for name in ("running", "stopped")
    }
    lifecycle = ["workspace.created", "workspace.started", "workspace.stopped", "workspace.deleted"]
    assert by_workspace == {"running": lifecycle, "stopped": lifecycle}
    # The stop recorded at start-up is the one the DELETED event would have recorded: seen both ways, it is one.
    stop = next(
        e for e in events if e["action"] == "workspace.stopped" and e["resources"]["workspace"] == "running"
    )
    assert stop["id"] == trail.deletion(was_running)[0].id
    assert "while no operator was running" in stop["reason"]
    # Every lifecycle event names its Workspace's created event.
    assert {e["requestId"] for e in events if e["resources"]["workspace"] == "running"} == {
        trail.created_id("uid-r")
    }


def test_a_missing_pinned_snapshot_says_so_and_what_exists() -> None:
    base = Plan(
        phase=WorkspacePhase.STARTING,
        conditions=(Condition("Ready", "False", "MaterializingSnapshot", "copying"),),
        apply=({"kind": "Job", "metadata": {"name": "ws-seg-materialize"}},),
    )
    missing = "sha256:" + "0" * 64
    result = snapshot_not_found(base, "prostate", missing, [("sha256:" + "ab" * 32, "2026-11-01T12:00:00Z")])
    ready = next(c for c in result.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "SnapshotNotFound")
    assert "000000000000" in ready.message and "abababababab (2026-11-01T12:00:00Z)" in ready.message
    assert "spec.dataset.snapshot" in ready.message
    assert result.apply == ()  # no materializer for a snapshot that is not there
    none = snapshot_not_found(base, "prostate", missing, [])
    assert "no published snapshot" in next(c.message for c in none.conditions if c.type == "Ready")
