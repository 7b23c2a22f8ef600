"""One event, many Workspaces: a shared snapshot copy verified, someone else's NetworkPolicy over a namespace,
our own policy deleted, a Dataset changed. Each Workspace is judged, whatever happened to the others' passes.

The attack this stops: judged one after another on the watch's thread, the first pass that failed ended the
loop. A modeller who holds a Workspace whose notebook the quota refuses (one asking for more CPU than the
namespace has left is enough) placed ahead of the others kept, when a NetworkPolicy opening their notebooks
appeared, every notebook after it running with the policy for up to the clock's next tick (five minutes); and
one refused pod kept every other Workspace over a shared copy from mounting it (measured with
bench/snapshot_volumes.py: 45 of 50 still materializing minutes after the copy verified).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any

import pytest

from cleanroom.api.contract import DATASET_LABEL, SNAPSHOT_LABEL
from cleanroom.handlers import _engine, workspace

NAMESPACE = "team-a"
NAMES = ["a-quota-refused", "b-notebook", "c-notebook"]


class ManualClock:
    """The queue's clock, run by the test: what is due now runs when the test says."""

    def __init__(self) -> None:
        self.due: dict[Hashable, Callable[[], None]] = {}

    def schedule(self, key: Hashable, when: float, action: Callable[[], None]) -> None:
        self.due[key] = action

    def cancel(self, key: Hashable) -> None:
        self.due.pop(key, None)

    def run_due(self) -> None:
        due, self.due = self.due, {}
        for action in due.values():
            # The real clock logs a failed pass; the queue has scheduled its retry.
            with contextlib.suppress(Exception):
                action()


class QuotaRefused(Exception):
    pass


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[str, str]], ManualClock]:
    passes: list[tuple[str, str]] = []
    clock = ManualClock()

    def work(key: tuple[str, str], request: Any) -> None:
        passes.append(key)
        if key[1] == NAMES[0]:
            raise QuotaRefused('pods "ws-a-quota-refused" is forbidden: exceeded quota')
        return None

    queue = _engine.WorkQueue(work, clock, retry_seconds=5.0)
    monkeypatch.setattr(workspace, "QUEUE", queue)
    return passes, clock


def _indexes() -> dict[str, Any]:
    workspaces = {f"{NAMESPACE}/{name}": [{"dataset": {"name": "ct"}}] for name in NAMES}
    return {
        "workspaces_by_key": workspaces,
        "datasets_by_name": {"ct": [{"spec": {}, "status": {}}]},
        "pods_by_name": {},
        "jobs_by_name": {},
        "policies_by_namespace": {},
    }


def _every_workspace_judged(judged: tuple[list[tuple[str, str]], ManualClock]) -> None:
    passes, clock = judged
    clock.run_due()
    assert sorted(passes) == [(NAMESPACE, name) for name in NAMES]
    # The refused one is tried again (the queue's retry), the others are not.
    assert list(clock.due) == [(NAMESPACE, NAMES[0])]


def test_a_foreign_policy_reaches_every_notebook_of_the_namespace_past_a_refused_one(
    judged: tuple[list[tuple[str, str]], ManualClock],
) -> None:
    workspace.foreign_policy_changed(namespace=NAMESPACE, **_indexes())
    _every_workspace_judged(judged)


def test_our_deleted_default_deny_reaches_every_workspace_of_the_namespace(
    judged: tuple[list[tuple[str, str]], ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspace, "guard_namespace", lambda namespace: None)
    workspace.policy_deleted(namespace=NAMESPACE, name="cleanroom-default-deny", labels={}, **_indexes())
    _every_workspace_judged(judged)


def test_a_verified_shared_copy_reaches_every_workspace_over_its_dataset(
    judged: tuple[list[tuple[str, str]], ManualClock],
) -> None:
    labels = {SNAPSHOT_LABEL: "c6d04fdf20b1", DATASET_LABEL: "ct"}
    workspace.owned_object_changed(namespace="cleanroom-snapshots", labels=labels, **_indexes())
    _every_workspace_judged(judged)


def test_a_dataset_change_reaches_every_workspace_over_it(
    judged: tuple[list[tuple[str, str]], ManualClock],
) -> None:
    indexes = _indexes()
    indexes["workspaces_by_dataset"] = {"ct": [(NAMESPACE, name) for name in NAMES]}
    body: Any = type("Body", (), {"spec": {}, "status": {}})()
    workspace.dataset_event(
        name="ct", type="MODIFIED", body=body, logger=logging.getLogger("test"), **indexes
    )
    _every_workspace_judged(judged)
