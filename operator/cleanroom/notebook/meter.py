"""The byte meter's accounting (pure): how many bytes a session has sent to the browser, how many more it
may send, and what to tell the audit trail.

Every byte from the notebook pod to the browser passes the meter (`meter_server`, its own container, the
single-user server listening only behind it), so this bounds what leaves through the browser by any
encoding, text included, which the download guard alone cannot. The budget is a sliding window: at most
`limit` bytes in any `window` seconds (kept in `slots` buckets, so a window frees up slot by slot rather
than all at once). The caller passes the clock."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class Budget:
    limit: int = DEFAULT_BUDGET_BYTES
    window: float = DEFAULT_WINDOW_SECONDS
    slots: int = 60

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0 or self.slots < 1:
            raise ValueError(
                f"a byte budget needs limit >= 1 byte, window > 0 s and slots >= 1 (got {self!r})"
            )

    def describe(self) -> str:
        return f"{self.limit} bytes per {self.window:g} s"

    @property
    def slot_seconds(self) -> float:
        return self.window / self.slots


@dataclass
class Totals:
    """A session's account, for the audit trail."""

    sent: int = 0
    requests: int = 0
    frames: int = 0
    refused: int = 0
    refused_bytes: int = 0


@dataclass
class ByteMeter:
    budget: Budget
    started: float
    totals: Totals = field(default_factory=Totals)
    # (slot index, bytes) for the slots inside the current window, oldest first.
    _slots: deque[tuple[int, int]] = field(default_factory=deque)
    _refusals_reported: int = 0
    _last_refusal_report: float | None = None
    # Set when the session ends: nothing more is granted, so the totals reported then are final.
    closed: bool = False

    def _slot(self, now: float) -> int:
        return math.floor(now / self.budget.slot_seconds)

    def _expire(self, now: float) -> None:
        current = self._slot(now)
        while self._slots and self._slots[0][0] <= current - self.budget.slots:
            self._slots.popleft()

    def used(self, now: float) -> int:
        self._expire(now)
        return sum(size for _, size in self._slots)

    def remaining(self, now: float) -> int:
        if self.closed:
            return 0
        return max(0, self.budget.limit - self.used(now))

    def close(self) -> None:
        self.closed = True

    def ledger(self, now: float, ahead: int = 0) -> list[tuple[float, int]]:
        """The window's spent bytes as (slot start in seconds since the epoch, bytes), oldest first; with
        ``ahead`` bytes added to the current slot (a record written before those bytes are sent)."""
        self._expire(now)
        slots = dict(self._slots)
        if ahead > 0:
            current = self._slot(now)
            slots[current] = slots.get(current, 0) + ahead
        return [(index * self.budget.slot_seconds, size) for index, size in sorted(slots.items())]

    def restore(self, entries: Iterable[tuple[float, int]], now: float) -> None:
        """Take back what a ledger says this window has spent: each slot keeps the larger of the two counts
        (a ledger is a record of bytes sent, never of bytes returned). Slots from the future are ignored; a
        ledger kept under another window's slot length lands in the slot its start falls in."""
        current = self._slot(now)
        slots = dict(self._slots)
        for start, size in entries:
            # The start of a slot is index * slot length; the tolerance keeps float rounding in that slot.
            index = math.floor(float(start) / self.budget.slot_seconds + 1e-6)
            if current - self.budget.slots < index <= current and int(size) > 0:
                slots[index] = max(slots.get(index, 0), int(size))
        self._slots = deque(sorted(slots.items()))

    def take(self, now: float, wanted: int) -> int:
        """Grant up to `wanted` bytes and count them as sent; the caller sends exactly what is granted."""
        granted = min(max(0, wanted), self.remaining(now))
        if granted:
            slot = self._slot(now)
            if self._slots and self._slots[-1][0] == slot:
                self._slots[-1] = (slot, self._slots[-1][1] + granted)
            else:
                self._slots.append((slot, granted))
            self.totals.sent += granted
        return granted

    def fits(self, now: float, size: int) -> bool:
        return size <= self.remaining(now)

    def refuse(self, wanted: int) -> None:
        """A response or frame withheld (in whole or in part) because the budget is spent."""
        self.totals.refused += 1
        self.totals.refused_bytes += max(0, wanted)

    def seconds_until(self, now: float, size: int) -> float:
        """How long until `size` more bytes fit (for Retry-After): the oldest slots expire first."""
        if size > self.budget.limit:
            return float("inf")
        free = self.remaining(now)
        slot_seconds = self.budget.window / self.budget.slots
        for index, freed in self._slots:
            if free >= size:
                break
            free += freed
            if free >= size:
                return max(0.0, (index + self.budget.slots) * slot_seconds - now)
        return 0.0

    def refusal_report_due(self, now: float, every: float = 60) -> bool:
        """Report the first refusal at once and then at most one a minute (a spent budget makes JupyterLab's
        polls fail every few seconds; the trail needs the fact and the count, not each poll)."""
        if self.totals.refused == self._refusals_reported:
            return False
        if self._last_refusal_report is None or now - self._last_refusal_report >= every:
            self._last_refusal_report = now
            self._refusals_reported = self.totals.refused
            return True
        return False

    def summary(self, now: float) -> str:
        t = self.totals
        return (
            f"{t.sent} bytes to the browser in {now - self.started:.0f} s "
            f"({t.requests} HTTP responses, {t.frames} websocket messages); "
            f"{t.refused} refused ({t.refused_bytes} bytes withheld); budget {self.budget.describe()}, "
            f"{self.used(now)} used in the current window"
        )
