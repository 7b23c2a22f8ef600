from datetime import UTC, datetime

from cleanroom.api import Condition, find_condition, is_true, merge_conditions

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 13, 0, tzinfo=UTC)


def test_new_condition_carries_observed_generation_and_transition_time() -> None:
    merged = merge_conditions(
        None, [Condition("Ready", "False", "DatasetNotFound", "m")], generation=3, now=T0
    )
    assert merged == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "DatasetNotFound",
            "message": "m",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-11-01T12:00:00Z",
        }
    ]


def test_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions(None, [Condition("Ready", "False", "A", "a")], generation=1, now=T0)
    same_status = merge_conditions(first, [Condition("Ready", "False", "B", "b")], generation=2, now=T1)
    assert same_status[0]["lastTransitionTime"] == "2026-11-01T12:00:00Z"
    assert same_status[0]["reason"] == "B"
    assert same_status[0]["observedGeneration"] == 2
    flipped = merge_conditions(same_status, [Condition("Ready", "True", "C", "c")], generation=2, now=T1)
    assert flipped[0]["lastTransitionTime"] == "2026-11-01T13:00:00Z"


def test_other_conditions_are_kept_and_sorted_by_type() -> None:
    first = merge_conditions(None, [Condition("Scheduled", "True", "S", "s")], generation=1, now=T0)
    merged = merge_conditions(first, [Condition("Ready", "True", "R", "r")], generation=1, now=T0)
    assert [c["type"] for c in merged] == ["Ready", "Scheduled"]
    assert is_true(merged, "Ready") and is_true(merged, "Scheduled")
    assert find_condition(merged, "Expired") is None
    assert not is_true(merged, "Expired")
