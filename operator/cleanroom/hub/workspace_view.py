"""What the hub shows and decides about Workspaces, from their objects alone (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cleanroom.api import Lifetime
from cleanroom.api.conditions import find_condition
from cleanroom.api.contract import READY
from cleanroom.hub.names import server_name
from cleanroom.workspaces.lifecycle import idle_deadline

# What this hub holds for the signed-in user's server: nothing, a start in progress, or a session it serves.
HubSession = Literal["none", "starting", "ready"]
# The page's buttons: open the session, stop it, follow or cancel a start, start it.
Action = Literal["open", "stop", "progress", "cancel", "start"]


@dataclass(frozen=True)
class WorkspaceView:
    namespace: str
    name: str
    server: str
    running: bool
    ready: bool
    reason: str
    message: str
    dataset: str
    purpose: str
    gpu: str
    # The listed user the operator runs the notebook for (status.startedBy); "" before anyone has started it.
    started_by: str = ""
    snapshot: str = ""
    expires_at: datetime | None = None
    idle_deadline: datetime | None = None

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def view(item: Mapping[str, Any]) -> WorkspaceView:
    meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status") or {}
    ready = find_condition(status.get("conditions"), READY) or {}
    current = ready.get("observedGeneration", meta.get("generation")) == meta.get("generation")
    resources = spec.get("resources", {})
    gpu = (
        f"{resources.get('gpu', 0)} x {resources.get('gpuType') or 'any'}" if resources.get("gpu") else "none"
    )
    if status.get("gpus") and status.get("node"):
        gpu += f" (on {status['node']})"
    running = bool(spec.get("running", True))
    snapshot = status.get("snapshot") or {}
    idle_timeout = str((spec.get("lifetime") or {}).get("idleTimeout") or Lifetime.idle_timeout)
    return WorkspaceView(
        namespace=meta["namespace"],
        name=meta["name"],
        server=server_name(meta["namespace"], meta["name"]),
        running=running,
        ready=current and ready.get("status") == "True",
        reason=str(ready.get("reason", "Pending")),
        message=str(ready.get("message", "waiting for the operator")),
        dataset=str(spec.get("dataset", {}).get("name", "")),
        purpose=str(spec.get("purpose", "")),
        gpu=gpu,
        started_by=str(status.get("startedBy") or "") if running else "",
        snapshot=str(
            snapshot.get("shortDigest") or str(snapshot.get("digest") or "").removeprefix("sha256:")[:12]
        ),
        expires_at=_time(status.get("expiresAt")),
        # Only a notebook that runs is stopped for idleness.
        idle_deadline=idle_deadline(meta, status, idle_timeout)
        if running and status.get("startedAt")
        else None,
    )


@dataclass(frozen=True)
class Row:
    """What the page says about one Workspace to one user: the state, why, and the buttons it offers."""

    state: str
    detail: str
    actions: tuple[Action, ...]


def row(current: WorkspaceView, user: str, session: HubSession) -> Row:
    """The truth for ``user``: a session this hub serves or starts, else what the Workspace itself says.
    A Workspace can run without this hub's record of it (started with kubectl or by an example, or before
    the hub lost its database): when it runs for this user it is theirs to open and stop; when it runs
    for another listed user it is that user's alone (the server admits only the user it was started for)."""
    why = f"{current.reason}: {current.message}"
    if session == "ready":
        return Row("Running", "", ("open", "stop"))
    if session == "starting":
        return Row("Starting", why, ("progress", "cancel"))
    failure = cannot_start(current)
    if may_stop(current, user):
        if current.ready:
            return Row("Running", "your session, started outside this page", ("open", "stop"))
        if failure:
            return Row("Failed", failure, ("stop",))
        return Row("Starting", why, ("progress", "cancel"))
    if current.running and current.started_by and not failure:
        return Row(
            f"In use by {current.started_by}",
            f"{current.started_by} started it; only they can open or stop their session",
            (),
        )
    if failure:
        return Row("Cannot start", failure, ())
    return Row("Stopped", why, ("start",))


def may_stop(current: WorkspaceView, user: str) -> bool:
    """Whether ``user`` may stop a Workspace this hub holds no session of: only the user it runs for."""
    return current.running and bool(current.started_by) and current.started_by.lower() == user.lower()


def deadline(when: datetime, now: datetime) -> tuple[str, str]:
    """A deadline as people read it: the UTC time, and how far away it is ("in 6d 23h", "5m ago")."""
    seconds = int((when - now).total_seconds())
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    span = f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m"
    return f"{when:%Y-%m-%d %H:%M} UTC", f"in {span}" if seconds >= 0 else f"{span} ago"


def visible_to(user: str, items: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The Workspaces that list `user` in spec.users, by server name. Names compare case-insensitively:
    the hub lower-cases user names (e-mail addresses among them)."""
    wanted = user.lower()
    found = {}
    for item in items:
        if wanted in (u.lower() for u in item.get("spec", {}).get("users", [])):
            meta = item["metadata"]
            found[server_name(meta["namespace"], meta["name"])] = item
    return found


def start_failed(item: Mapping[str, Any]) -> str | None:
    """A reason the start cannot succeed without someone changing something, else None (keep waiting)."""
    return cannot_start(view(item))


def cannot_start(current: WorkspaceView) -> str | None:
    """What makes a start of this Workspace fail until someone changes something, else None."""
    # Waiting cannot fix these; a missing Dataset, a full quota or a busy GPU may resolve by themselves.
    terminal = {
        "AccessDenied",
        "AccessRevoked",
        "Expired",
        "LifetimeEnded",
        "ImageNotAllowed",
        "MaterializeFailed",
        "SnapshotVerificationFailed",
    }
    if not current.ready and current.reason in terminal:
        return f"{current.reason}: {current.message}"
    return None


def pod_gone(pod: Mapping[str, Any] | None, now: datetime, patience: timedelta) -> bool:
    """Whether a stopped session's notebook pod is gone: deleted, or terminating for longer than its grace
    period (its deletionTimestamp) and ``patience`` more (a node that stopped answering keeps a deleted pod
    for ever; its containers have been told to stop long since)."""
    if pod is None:
        return True
    deleting = _time((pod.get("metadata") or {}).get("deletionTimestamp"))
    return deleting is not None and now >= deleting + patience
