"""One verification for the CLI, the officers' page and the store: the chain and its checkpoints under the
verifier's own trusted keys, the writers' receipts, and the newest checkpoint's age. Pure: the caller reads
the files and passes the clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cleanroom.audit.chain import Problem, Report, check_lines, wanted_heads
from cleanroom.audit.receipts import check_receipts
from cleanroom.audit.trust import Anchors, pinned


def verify_trail(
    lines: Iterable[bytes],
    checkpoints: Iterable[str],
    keys: Mapping[str, Mapping[str, Any]],
    anchors: Anchors,
    *,
    receipts: Iterable[str] = (),
    max_age_seconds: float | None = None,
    now: datetime | None = None,
) -> Report:
    """The report on a trail: ``keys`` is its keys.json (key material only: a key counts when its fingerprint
    is in ``anchors``), ``receipts`` the writers' receipts, ``max_age_seconds`` how old the newest checkpoint
    may be at ``now`` (a service signs one every minute, idle or not, so an old newest checkpoint means the
    tail was cut off together with its checkpoints, or the service stopped sealing)."""
    checkpoints, receipts = list(checkpoints), list(receipts)
    keep = wanted_heads(checkpoints, receipts)  # so that a streamed trail is verified in constant memory
    report = check_lines(lines, checkpoints, pinned(anchors, keys), keep)
    problem = report.problem or check_receipts(report, receipts)
    if problem is None and max_age_seconds is not None:
        problem = _stale(report, max_age_seconds, now or datetime.now(UTC))
    return dataclasses.replace(report, problem=problem)


def _stale(report: Report, max_age_seconds: float, now: datetime) -> Problem | None:
    if not report.newest:
        return Problem(report.records, "stale", "no signed checkpoint: nothing seals this trail")
    signed = datetime.strptime(report.newest, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    age = (now - signed).total_seconds()
    if age > max_age_seconds:
        return Problem(
            report.sealed,
            "stale",
            f"the newest checkpoint ({report.newest}, at record {report.sealed}) is {age:.0f} s old, more than "
            f"the {max_age_seconds:.0f} s allowed: the tail was cut off with its checkpoints, or the service "
            "stopped sealing",
        )
    return None
