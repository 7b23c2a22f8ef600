"""The operator's clock runs each key's latest action once, at its time."""

from __future__ import annotations

import time

from cleanroom.handlers._clock import Clock


def test_the_latest_schedule_of_a_key_runs_once_at_its_time() -> None:
    clock = Clock(threads=2)
    ran: list[tuple[str, float]] = []
    start = time.monotonic()

    def record(label: str) -> None:
        ran.append((label, time.monotonic() - start))

    clock.schedule("a", start + 0.2, lambda: record("a-early"))
    clock.schedule("a", start + 0.4, lambda: record("a-late"))  # replaces the early one
    clock.schedule("b", start + 0.1, lambda: record("b"))
    clock.cancel("b")
    clock.schedule("c", start + 0.1, lambda: record("c"))
    time.sleep(0.8)
    assert [label for label, _ in ran] == ["c", "a-late"]
    assert ran[1][1] >= 0.4
    assert clock.pending("a") is None
