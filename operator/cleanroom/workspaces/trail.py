"""A Workspace's lifecycle in the audit trail, exactly once: which transitions a pass records, and the event
id of each, derived from the Workspace's uid and the transition (never random).

The audit log stores an event id only once, so a transition recorded twice (a pass repeated after a crash,
a restart that judges every Workspace again) is one event; and because the handler records a transition
before it writes the status that implies it, a crash between the two repeats the record, never loses it.
Every event of a Workspace carries its ``workspace.created`` id as its requestId, which ties it to that one
Workspace (names are reused, uids are not); a run's stop has an id derived from its start's, so the trail
alone tells which runs never stopped.
Pure: the handler passes the Workspace as it was and the plan it is about to carry out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api.contract import READY
from cleanroom.workspaces.lifecycle import Plan, audit_transitions

# The namespace of every Workspace lifecycle event id (uuid5).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cleanroom.dev/audit/workspace")
CREATED = "workspace.created"
DELETED = "workspace.deleted"
STOPPED = "workspace.stopped"


@dataclass(frozen=True)
class Transition:
    action: str
    outcome: str
    reason: str
    id: str
    # The Workspace's workspace.created id, recorded as the event's requestId.
    root: str = ""


def created_id(uid: str) -> str:
    """The id of the Workspace's ``workspace.created`` event; every other event id of it derives from this
    one, so the trail alone tells (by id) whether a Workspace it knows was ever recorded as deleted."""
    return str(uuid.uuid5(_NAMESPACE, uid))


def event_id(created: str, key: str) -> str:
    return str(uuid.uuid5(uuid.UUID(created), key))


def deleted_id(created: str) -> str:
    return event_id(created, "deleted")


def started_id(created: str, started_at: str) -> str:
    """The id of the start of the run whose notebook pod started at ``started_at``."""
    return event_id(created, f"started/{started_at}")


def stopped_id(started: str) -> str:
    """The id of the stop of the run whose start has the id ``started``: derived from it, so that a start
    with no stop in the trail is a run whose stop was never recorded."""
    return event_id(started, "stopped")


def _id(root: str, action: str, reason: str, workspace: Mapping[str, Any], plan: Plan) -> str:
    """What makes this transition this one: a run (by its pod's start time) starts, stops or is revoked once;
    a Workspace expires once; anything else once per spec generation and wording."""
    status = workspace.get("status") or {}
    generation = int(workspace["metadata"].get("generation", 0))
    if action == "workspace.started":
        return started_id(root, str(plan.status.started_at or f"g{generation}"))
    if action == STOPPED:
        ran = status.get("startedAt") if status.get("phase") == "Running" else ""
        return stopped_id(started_id(root, str(ran or f"g{generation}")))
    if action == "workspace.revoked":
        return event_id(root, f"revoked/{status.get('startedAt') or f'g{generation}'}")
    if action == "workspace.expired":
        return event_id(root, "expired")
    return event_id(root, f"{action}/g{generation}/{hashlib.sha256(reason.encode()).hexdigest()[:16]}")


def transitions(workspace: Mapping[str, Any], plan: Plan, created_reason: str = "") -> list[Transition]:
    """The audit events of carrying out ``plan`` on ``workspace`` (as read before the pass), each with its id:
    ``workspace.created`` before the Workspace's first status; a stop whenever a running notebook stops,
    for whatever reason (so every start has its stop); and what ``audit_transitions`` decides."""
    uid = str(workspace["metadata"].get("uid", ""))
    status = workspace.get("status") or {}
    root = created_id(uid)
    found: list[Transition] = []
    if not status.get("observedGeneration"):
        found.append(Transition(CREATED, "success", created_reason, root, root))
    previous = status.get("phase")
    decided = audit_transitions(previous, plan)
    if previous == "Running" and plan.phase != "Running" and all(a != STOPPED for a, _, _ in decided):
        ready = next((c for c in plan.conditions if c.type == READY), None)
        decided.append((STOPPED, "success", f"{ready.reason}: {ready.message}" if ready else plan.phase))
    for action, outcome, reason in decided:
        found.append(Transition(action, outcome, reason, _id(root, action, reason, workspace, plan), root))
    return found


def deletion(workspace: Mapping[str, Any]) -> list[Transition]:
    """The events of a Workspace's deletion, from its last state: its running notebook stops, and it goes."""
    uid = str(workspace["metadata"].get("uid", ""))
    status = workspace.get("status") or {}
    root = created_id(uid)
    found = []
    if status.get("phase") == "Running" and status.get("startedAt"):
        stop = stopped_id(started_id(root, str(status["startedAt"])))
        found.append(Transition(STOPPED, "success", "the Workspace was deleted", stop, root))
    found.append(Transition(DELETED, "success", "", deleted_id(root), root))
    return found


def _derived(ident: str) -> bool:
    try:
        return uuid.UUID(ident).version == 5
    except ValueError:
        return False


@dataclass(frozen=True)
class Vanished:
    """A Workspace the trail records as created and not deleted, that the cluster no longer has; with the
    events its going implies: the stop of each run with no stop recorded (it was running), then its deletion."""

    created: str
    resources: Mapping[str, str]
    purpose: str
    events: tuple[tuple[Transition, Mapping[str, str]], ...] = ()


def vanished(events: Iterable[Mapping[str, Any]], live_uids: Iterable[str]) -> list[Vanished]:
    """Workspaces deleted while no operator watched (their DELETED event was never seen): recorded as created
    in ``events`` (audit event documents), with no deletion, and not among ``live_uids``. A run of theirs
    is found by its start's requestId (the created id), and is open when its derived stop is not recorded."""
    created: dict[str, Mapping[str, Any]] = {}
    started: dict[str, list[Mapping[str, Any]]] = {}
    recorded: set[str] = set()
    for event in events:
        ident = str(event.get("id"))
        recorded.add(ident)
        # Only ids derived from a uid (version 5) can be matched to the cluster; earlier random ones cannot.
        if event.get("action") == CREATED and _derived(ident):
            created[ident] = event
        elif event.get("action") == "workspace.started" and event.get("requestId"):
            started.setdefault(str(event["requestId"]), []).append(event)
    live = {created_id(uid) for uid in live_uids}
    gone = []
    for ident, event in created.items():
        if ident in live or deleted_id(ident) in recorded:
            continue
        resources = dict(event.get("resources") or {})
        stops = tuple(
            (
                Transition(STOPPED, "success", _AWAY, stopped_id(str(run["id"])), ident),
                dict(run.get("resources") or resources),
            )
            for run in started.get(ident, [])
            if stopped_id(str(run["id"])) not in recorded
        )
        gone.append(
            Vanished(
                ident,
                resources,
                str(event.get("purpose") or ""),
                (*stops, (Transition(DELETED, "success", _AWAY, deleted_id(ident), ident), resources)),
            )
        )
    return gone


_AWAY = "deleted while no operator was running (found missing at start-up; the API server's audit log has the time)"
