"""The bytes each Workspace's byte meter has sent to the browser in its current window, kept by the hub so
that a meter that restarts (the workspace stopped and started, its container killed) starts with what the
window has already spent instead of a fresh budget.

A meter reports its ledger, (slot start, bytes) pairs, with its server's own hub token (`pages.MeterLedger`);
the kernel holds no such token. Merging keeps the larger count of each slot, so no report, replayed, late or
from an older meter, can lower what a window has spent. The ledgers live in one JSON file next to the hub's
database (a volume only the hub mounts), keyed by the Workspace, not by the user or the named server: a
server the user deletes and creates again is the same Workspace, with the same spent budget."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# A window longer than this is a mistake in the report, and the file must not keep slots for ever.
MAX_WINDOW_SECONDS = 31 * 24 * 3600
# Clocks of the node and the hub may differ a little; a slot further ahead than this is not believed.
CLOCK_SKEW_SECONDS = 300
MAX_SLOTS = 10_000

Ledger = dict[str, Any]  # {"window": seconds, "slots": [[slot start, bytes], ...]}


class InvalidLedger(ValueError):
    """A report that is not a ledger; the message says why."""


def _slots(body: Mapping[str, Any]) -> dict[float, int]:
    raw = body.get("slots", [])
    if not isinstance(raw, list) or len(raw) > MAX_SLOTS:
        raise InvalidLedger(f"slots must be a list of at most {MAX_SLOTS} [start, bytes] pairs")
    slots: dict[float, int] = {}
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 2):
            raise InvalidLedger(f"each slot is a [start, bytes] pair, got {entry!r}")
        start, size = entry
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start):
            raise InvalidLedger(f"a slot's start is seconds since the epoch, got {start!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidLedger(f"a slot's bytes are a whole number >= 0, got {size!r}")
        slots[float(start)] = max(slots.get(float(start), 0), size)
    return slots


def _window(body: Mapping[str, Any]) -> float:
    window = body.get("window", 0)
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, float))
        or not 0 < window <= MAX_WINDOW_SECONDS
    ):
        raise InvalidLedger(f"window must be seconds in (0, {MAX_WINDOW_SECONDS}], got {window!r}")
    return float(window)


def merge(kept: Mapping[str, Any], report: Mapping[str, Any], now: float) -> Ledger:
    """The ledger after a meter's report: each slot's larger count, the longer window, and nothing older
    than that window or further ahead than the clocks' skew."""
    window = max(_window(report), float(kept.get("window", 0) or 0))
    slots = _slots(kept) if kept else {}
    for start, size in _slots(report).items():
        slots[start] = max(slots.get(start, 0), size)
    return {
        "window": window,
        "slots": [
            [start, size]
            for start, size in sorted(slots.items())
            if now - window - CLOCK_SKEW_SECONDS < start <= now + CLOCK_SKEW_SECONDS and size > 0
        ],
    }


class LedgerFile:
    """The hub's ledgers, one per Workspace (``namespace/name``), in one JSON file written whole and
    replaced atomically. Only the hub's process writes it (JupyterHub runs one hub)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._ledgers: dict[str, Ledger] | None = None

    def _load(self) -> dict[str, Ledger]:
        if self._ledgers is None:
            try:
                self._ledgers = dict(json.loads(self.path.read_text()))
            except FileNotFoundError:
                self._ledgers = {}
        return self._ledgers

    def get(self, key: str) -> Ledger:
        return dict(self._load().get(key) or {"window": 0, "slots": []})

    def update(self, key: str, report: Mapping[str, Any], now: float) -> Ledger:
        ledgers = self._load()
        merged = merge(ledgers.get(key) or {}, report, now)
        ledgers[key] = merged
        # Other Workspaces' old slots go too, so that the file holds current windows only.
        for other, ledger in list(ledgers.items()):
            if other != key:
                ledgers[other] = merge(ledger, {"window": ledger.get("window") or 1, "slots": []}, now)
                if not ledgers[other]["slots"]:
                    del ledgers[other]
        partial = self.path.with_name(self.path.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(ledgers, sort_keys=True))
        os.replace(partial, self.path)
        return merged


_FILES: dict[str, LedgerFile] = {}


def ledger_file(path: str) -> LedgerFile:
    """The one LedgerFile of the hub's process for ``path``."""
    if path not in _FILES:
        _FILES[path] = LedgerFile(path)
    return _FILES[path]
