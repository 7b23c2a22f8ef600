"""What the operator remembers between passes so that a pass writes only what changed: the objects it
applied (a digest and when), the namespaces it guarded, and the facts of the last event seen per object.

All of it is a cache: lost at a restart, the next passes apply everything once more and nothing is wrong.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# (kind, name) of an object in its owner's namespace.
ObjectKey = tuple[str, str]


def digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()


class AppliedObjects(Generic[K]):
    """What was last applied of each object of each owner (a digest of its manifest) and when. An object
    whose manifest is the same is not written again; it is anyway every ``reapply_seconds``, so an object
    someone deleted by hand (a NetworkPolicy, say) comes back within that time."""

    def __init__(self, reapply_seconds: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.reapply_seconds = reapply_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._applied: dict[K, dict[ObjectKey, tuple[str, float]]] = {}

    def due(self, owner: K, manifest: Mapping[str, Any]) -> bool:
        """Whether ``manifest`` is to be applied: never applied, changed, or applied too long ago."""
        with self._lock:
            last = self._applied.get(owner, {}).get(_object_key(manifest))
        if last is None or last[0] != digest(manifest):
            return True
        return self._monotonic() - last[1] > self.reapply_seconds

    def record(self, owner: K, manifest: Mapping[str, Any]) -> None:
        with self._lock:
            self._applied.setdefault(owner, {})[_object_key(manifest)] = (digest(manifest), self._monotonic())

    def forget_object(self, owner: K, kind: str, name: str) -> None:
        """The object was deleted: the next pass that wants it applies it."""
        with self._lock:
            self._applied.get(owner, {}).pop((kind, name), None)

    def forget(self, owner: K) -> None:
        with self._lock:
            self._applied.pop(owner, None)


def _object_key(manifest: Mapping[str, Any]) -> ObjectKey:
    return (str(manifest["kind"]), str(manifest["metadata"]["name"]))


class NamespaceGuards:
    """Runs a namespace's guard (labels, default deny, quota) at most once per ``interval`` seconds, one at
    a time per namespace. Many Workspaces of one namespace start together: one pass applies, the others wait
    for it rather than all applying the same objects (and losing races on the quota's status)."""

    def __init__(self, interval: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._monotonic = monotonic
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._guarded: dict[str, float] = {}

    def ensure(self, namespace: str, guard: Callable[[], None]) -> None:
        """Run ``guard`` unless it ran for ``namespace`` within the interval; a guard that raises counts as
        not run."""
        with self._locks_guard:
            lock = self._locks.setdefault(namespace, threading.Lock())
        with lock:
            guarded = self._guarded.get(namespace)
            if guarded is not None and self._monotonic() - guarded <= self.interval:
                return
            guard()
            self._guarded[namespace] = self._monotonic()

    def forget(self, namespace: str) -> None:
        """One of the namespace's guards went: the next pass guards it again at once."""
        self._guarded.pop(namespace, None)


class LastSeen(Generic[K, V]):
    """The facts of each object's last event, for event filters: the kubelet (or kwok) updates a pod several
    times for each change a plan cares about, and only a change of the facts is worth a pass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: dict[K, V] = {}

    def changed(self, key: K, facts: V) -> bool:
        """Whether ``facts`` differ from the last ones seen for ``key`` (then they are the last ones)."""
        with self._lock:
            if key in self._facts and self._facts[key] == facts:
                return False
            self._facts[key] = facts
            return True

    def forget(self, key: K) -> None:
        with self._lock:
            self._facts.pop(key, None)
