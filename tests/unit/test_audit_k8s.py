"""The API server's audit events become cleanroom events: side channels and Dataset/Workspace writes only."""

from __future__ import annotations

from typing import Any

import pytest

from cleanroom.audit.k8s import translate, translate_list


def api_event(
    resource: str,
    subresource: str = "",
    verb: str = "get",
    stage: str = "ResponseComplete",
    code: int = 101,
    group: str = "",
    **ref: str,
) -> dict[str, Any]:
    return {
        "kind": "Event",
        "auditID": "a1b2",
        "stage": stage,
        "verb": verb,
        "requestURI": f"/api/v1/namespaces/team-a/{resource}/x/{subresource}",
        "user": {"username": "alice@hospital.example"},
        "objectRef": {
            "resource": resource,
            "subresource": subresource,
            "apiGroup": group,
            "namespace": "team-a",
            "name": "ws-seg",
            **ref,
        },
        "responseStatus": {"code": code},
        "stageTimestamp": "2026-11-25T10:00:00.123456789Z",
    }


@pytest.mark.parametrize(
    ("subresource", "action"),
    [("exec", "k8s.exec"), ("attach", "k8s.attach"), ("portforward", "k8s.portforward")],
)
def test_side_channels_on_pods_are_recorded(subresource: str, action: str) -> None:
    event = translate(api_event("pods", subresource))
    assert event is not None and event.action == action
    assert event.resources == {"namespace": "team-a", "pod": "ws-seg"}
    assert event.actor.name == "alice@hospital.example" and event.actor.kind == "user"
    assert event.time == "2026-11-25T10:00:00.123456Z"


def test_both_stages_of_one_request_are_one_event_and_a_refusal_is_denied() -> None:
    started, completed = (
        translate(api_event("pods", "exec", stage="ResponseStarted")),
        translate(api_event("pods", "exec")),
    )
    assert started is not None and completed is not None and started.id == completed.id
    refused = translate(api_event("pods", "exec", code=403))
    assert refused is not None and refused.outcome == "denied"


def test_writes_to_datasets_and_workspaces_are_recorded_reads_and_other_resources_are_not() -> None:
    change = translate(api_event("workspaces", verb="patch", group="cleanroom.dev", code=200))
    assert change is not None and change.action == "k8s.change" and change.resources["workspace"] == "ws-seg"
    assert translate(api_event("workspaces", verb="get", group="cleanroom.dev", code=200)) is None
    assert translate(api_event("secrets", verb="get", code=200)) is None
    assert translate(api_event("pods", "log")) is None
    service = translate(
        {
            **api_event("datasets", verb="delete", group="cleanroom.dev", code=200),
            "user": {"username": "system:serviceaccount:x:y"},
        }
    )
    assert service is not None and service.actor.kind == "service"


def test_only_event_lists_are_accepted() -> None:
    with pytest.raises(ValueError, match="EventList"):
        translate_list({"kind": "Event"})
    assert (
        len(
            translate_list(
                {"kind": "EventList", "items": [api_event("pods", "exec"), api_event("pods", "log")]}
            )
        )
        == 1
    )
