"""The read grant each Workspace's materializer holds now, by Workspace: the plan says which snapshot it is
to read (``Plan.grant``); this issues a grant when there is none for that snapshot or the one held is past
half its life, and otherwise hands back the one held."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from cleanroom.snapshots.grant import Grant

K = TypeVar("K", bound=Hashable)


class GrantCache(Generic[K]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[K, Grant] = {}

    def url(self, key: K, snapshot: str, now: datetime, issue: Callable[[], Grant]) -> str:
        """The URL of the grant for ``snapshot`` that ``key``'s reader Secret is to hold ("" for none: the
        plan asks for no grant). ``issue`` writes a new grant to the store, so it is called only when one is
        due. Only the Workspace's own pass asks for its key, one at a time, so the lock guards the map and
        not the issuing."""
        if not snapshot:
            return ""
        with self._lock:
            current = self._held.get(key)
        if current is None or current.snapshot != snapshot or current.renewal_due(now):
            current = issue()
            with self._lock:
                self._held[key] = current
        return current.url

    def forget(self, key: K) -> None:
        with self._lock:
            self._held.pop(key, None)
