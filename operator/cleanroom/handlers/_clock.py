"""One clock for the whole operator: each key (a Workspace) is judged again at the moment its plan said it
could change, on a few threads of its own.

kopf's timers would do it per object, but each timer costs an asyncio task, a pass every interval whether
or not anything is due, and a finalizer on every Workspace (kopf must stop the timer before deletion), so
deleting a Workspace would hang while the operator is down.
"""

from __future__ import annotations

import contextvars
import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Clock:
    def __init__(self, threads: int = 4) -> None:
        self._due: dict[Hashable, tuple[float, Callable[[], None], contextvars.Context]] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._counter = 0
        self._changed = threading.Condition()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="clock")
        self._thread: threading.Thread | None = None

    def schedule(self, key: Hashable, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at ``when`` (time.monotonic), replacing what ``key`` had scheduled. It runs in a
        copy of the caller's context (kopf keeps its settings there, and posting Events needs them)."""
        with self._changed:
            self._due[key] = (when, action, contextvars.copy_context())
            self._counter += 1
            heapq.heappush(self._heap, (when, self._counter, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="workspace-clock", daemon=True)
                self._thread.start()
            self._changed.notify()

    def cancel(self, key: Hashable) -> None:
        with self._changed:
            self._due.pop(key, None)

    def pending(self, key: Hashable) -> float | None:
        with self._changed:
            entry = self._due.get(key)
            return entry[0] if entry else None

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._heap:
                    self._changed.wait()
                when, _, key = self._heap[0]
                entry = self._due.get(key)
                if entry is None or entry[0] != when:
                    heapq.heappop(self._heap)  # cancelled or rescheduled
                    continue
                delay = when - time.monotonic()
                if delay > 0:
                    self._changed.wait(delay)
                    continue
                heapq.heappop(self._heap)
                del self._due[key]
            self._pool.submit(self._call, key, entry[1], entry[2])

    @staticmethod
    def _call(key: Hashable, action: Callable[[], None], context: contextvars.Context) -> None:
        try:
            context.run(action)
        except Exception as error:
            log.warning("clock: judging %s again failed (%s); its next event or tick retries", key, error)
            log.debug("clock failure for %s", key, exc_info=True)
