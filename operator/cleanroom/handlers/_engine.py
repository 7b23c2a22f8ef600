"""The reconcile engine: a per-key work queue, after controller-runtime's workqueue.

What it keeps of controller-runtime: a key is judged by one pass at a time; a request for a key that arrives
while its pass runs is neither lost nor run beside it, it is merged into one more pass right after; a pass
says when to judge the key again with nothing else happening (requeue-after, from the plan's deadline); a
pass that fails is judged again soon.

What differs, and why:
- No worker pool of its own. kopf runs synchronous handlers on its threads, and the error of a change handler
  must reach kopf (it retries with the error's delay), so the thread that adds a key runs its pass when none
  is running; otherwise it leaves the request and returns at once. The clock's threads run timed passes.
- A request carries data (the newest Dataset seen, and the watches' indexes), not only the key; merged
  requests keep the newest.
- A key has one timed request, and a new one replaces it (the newest plan's deadline is the one that
  counts; controller-runtime keeps the earliest). No growing back-off: a failed pass is retried at a fixed
  interval, as the operator always did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Scheduler(Protocol):
    """What the queue needs of a clock (handlers._clock.Clock): one action per key, run at its time."""

    def schedule(self, key: Hashable, when: float, action: Callable[[], None]) -> None: ...

    def cancel(self, key: Hashable) -> None: ...


@dataclass(frozen=True)
class Again(Generic[R]):
    """Judge the key again in ``seconds`` if nothing else does first, with the request ``request()`` makes
    then (read when it is due, so a timed pass sees the world as it is by then)."""

    seconds: float
    request: Callable[[], R]


def seconds_until(deadline: datetime | None, now: datetime, longest: float) -> float:
    """Seconds from ``now`` until a plan's ``deadline`` (when the clock alone changes it), at most ``longest``
    (the longest a key goes unjudged). Half a second late, so the pass at the deadline is past it."""
    if deadline is None:
        return longest
    return min(longest, max(0.0, (deadline - now).total_seconds()) + 0.5)


class WorkQueue(Generic[K, R]):
    """Runs ``work(key, request)`` for each key added, one pass at a time per key, and again when the pass
    asks (it returns ``Again``; None: the key is gone, forget its timed pass). A pass that raises is run
    again after ``retry_seconds`` and its error goes on to the caller."""

    def __init__(
        self,
        work: Callable[[K, R], Again[R] | None],
        clock: Scheduler,
        *,
        retry_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._work = work
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # controller-runtime's "processing" set and "dirty" set, the latter with each key's newest request.
        self._running: set[K] = set()
        self._pending: dict[K, R] = {}

    def add(self, key: K, request: R) -> None:
        """Judge ``key`` now, on this thread, or (when a pass for it is running) right after that pass."""
        with self._lock:
            self._pending[key] = request
            if key in self._running:
                return
            self._running.add(key)
        try:
            while (next_request := self._next(key)) is not None:
                self._pass(key, next_request[0])
        except BaseException:
            with self._lock:
                self._running.discard(key)
            raise

    def add_after(self, key: K, seconds: float, request: Callable[[], R]) -> None:
        """Judge ``key`` in ``seconds`` with ``request()``, replacing what was timed for it."""
        self._clock.schedule(key, self._monotonic() + seconds, lambda: self.add(key, request()))

    def forget(self, key: K) -> None:
        """Drop the key's timed pass (the object is gone)."""
        self._clock.cancel(key)

    def running(self, key: K) -> bool:
        with self._lock:
            return key in self._running

    def _next(self, key: K) -> tuple[R] | None:
        """The key's newest request, taken; None (and the key no longer running) when there is none."""
        with self._lock:
            if key not in self._pending:
                self._running.discard(key)
                return None
            return (self._pending.pop(key),)

    def _pass(self, key: K, request: R) -> None:
        try:
            again = self._work(key, request)
        except Exception as error:
            # Retried with the newest request: one that arrived during the failed pass, else its own; as late
            # as the error asks (kopf.TemporaryError's delay: a pod the quota refuses is not asked for again
            # every few seconds), else soon.
            with self._lock:
                retry = self._pending.get(key, request)
            asked = getattr(error, "delay", None)
            seconds = float(asked) if isinstance(asked, int | float) and asked > 0 else self._retry_seconds
            self.add_after(key, seconds, lambda: retry)
            raise
        if again is None:
            self.forget(key)
        else:
            self.add_after(key, again.seconds, again.request)
