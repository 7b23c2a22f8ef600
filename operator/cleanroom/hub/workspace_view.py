"""What the hub shows and decides about Workspaces, from their objects alone (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api.conditions import find_condition
from cleanroom.hub.names import server_name


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

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def view(item: Mapping[str, Any]) -> WorkspaceView:
    meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status") or {}
    ready = find_condition(status.get("conditions"), "Ready") or {}
    current = ready.get("observedGeneration", meta.get("generation")) == meta.get("generation")
    resources = spec.get("resources", {})
    gpu = (
        f"{resources.get('gpu', 0)} x {resources.get('gpuType') or 'any'}" if resources.get("gpu") else "none"
    )
    return WorkspaceView(
        namespace=meta["namespace"],
        name=meta["name"],
        server=server_name(meta["namespace"], meta["name"]),
        running=bool(spec.get("running", True)),
        ready=current and ready.get("status") == "True",
        reason=str(ready.get("reason", "Pending")),
        message=str(ready.get("message", "waiting for the operator")),
        dataset=str(spec.get("dataset", {}).get("name", "")),
        purpose=str(spec.get("purpose", "")),
        gpu=gpu,
    )


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
    current = view(item)
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
