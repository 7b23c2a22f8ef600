"""Materializers' read grants, on the operator's side: the store and keys grants are issued with, and the
grant each Workspace's materializer holds now. (The signer materializers ask for object URLs runs in a pod of
its own: cleanroom.cli_signer.)

Plans say which snapshot a Workspace is to read (``Plan.grant``); `GrantCache` issues a grant when there is
none for that snapshot or the one held is past half its life, and otherwise hands back the one held.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from cleanroom.config import snapshot_location
from cleanroom.snapshots import SnapshotStore
from cleanroom.snapshots.grant import Grant
from cleanroom.snapshots.signing import seal_key
from cleanroom.snapshots.store import Presign, presigner

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class GrantKeys:
    """The store grants are written to and manifests read from, the signer of the URLs materializers get
    (the read-only key where one is configured, so no URL it signs can ever write; the operator's own
    otherwise), and the key that seals grants (derived from that read key's secret)."""

    store: SnapshotStore
    presign: Presign
    seal_key: bytes


@functools.cache
def grant_keys(materializer_endpoint: str) -> GrantKeys:
    """`GrantKeys` with URLs signed for ``materializer_endpoint``, the store's address as materializers
    reach it."""
    location = snapshot_location()
    env = os.environ
    reader = dataclasses.replace(
        location,
        access_key=env.get("CLEANROOM_SNAPSHOT_READER_ACCESS_KEY") or location.access_key,
        secret_key=env.get("CLEANROOM_SNAPSHOT_READER_SECRET_KEY") or location.secret_key,
    )
    return GrantKeys(
        SnapshotStore(location), presigner(reader, materializer_endpoint), seal_key(reader.secret_key)
    )


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
