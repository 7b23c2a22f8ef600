"""Status conditions as controller-runtime writes them, so that ``kubectl wait --for=condition=X`` works.

Pure: callers pass the clock. A condition's ``lastTransitionTime`` only moves when its status changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``current`` and return the new list, ordered by type for stable diffs."""
    by_type: dict[str, dict[str, Any]] = {str(c["type"]): dict(c) for c in current or ()}
    for update in updates:
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != update.status
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "observedGeneration": generation,
            "lastTransitionTime": rfc3339(now) if changed else previous["lastTransitionTime"],  # type: ignore[index]
        }
    return [by_type[key] for key in sorted(by_type)]


def find_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.get("status") == "True"
