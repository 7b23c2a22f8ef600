"""The Workspace lifecycle decision: access, image policy, running, expiry, idle culling, scheduling."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanroom.workspaces import Observed, WorkspaceSettings, parse_duration, plan_workspace

DIGEST = "sha256:" + "ab" * 32
CREATED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SETTINGS = WorkspaceSettings()


def workspace(**spec: Any) -> dict[str, Any]:
    body = {
        "metadata": {
            "name": "seg",
            "namespace": "team",
            "uid": "u1",
            "generation": 1,
            "creationTimestamp": "2026-11-01T12:00:00Z",
            # As the admission policy admits it: the API server's name for whoever created it.
            "annotations": {"cleanroom.dev/created-by": "alice@hospital.example"},
        },
        "spec": {
            "dataset": {"name": "prostate", "snapshot": ""},
            "users": ["alice@hospital.example"],
            "purpose": "Train a lesion segmentation model",
            "image": "registry.example.org/cleanroom/notebook:1",
            "resources": {
                "gpu": 1,
                "gpuType": "nvidia-a100-80gb",
                "cpu": "8",
                "memory": "64Gi",
                "homeStorage": "10Gi",
            },
            "lifetime": {"expiresAfter": "168h", "idleTimeout": "2h"},
            "running": True,
        },
    }
    body["spec"].update(spec)
    return body


def dataset(users: list[str] | None = None, groups: list[str] | None = None) -> dict[str, Any]:
    return {
        "spec": {
            "source": {"directory": {"path": "/x"}},
            "deidentification": {"method": "Anonymize"},
            "access": {
                "users": users if users is not None else ["alice@hospital.example"],
                "groups": groups or [],
                "namespaces": {"names": ["team"]},
            },
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "snapshot": {"digest": DIGEST, "bytes": 10},
        },
    }


JOB_DONE = {"status": {"succeeded": 1}}


def observed(**kwargs: Any) -> Observed:
    base: dict[str, Any] = {"now": CREATED + timedelta(minutes=5), "dataset": dataset(), "job": JOB_DONE}
    base.update(kwargs)
    return Observed(**base)


def reasons(plan: Any) -> dict[str, str]:
    return {c.type: c.reason for c in plan.conditions}


def kinds(plan: Any) -> list[str]:
    return [m["kind"] for m in plan.apply]


def test_image_from_an_unapproved_registry_creates_nothing() -> None:
    plan = plan_workspace(workspace(image="docker.io/evil/miner:latest"), observed(), SETTINGS)
    assert reasons(plan)["Ready"] == "ImageNotAllowed" and plan.apply == () and plan.delete_pod


def test_user_without_access_creates_nothing_and_is_named() -> None:
    plan = plan_workspace(workspace(users=["mallory@elsewhere.example"]), observed(), SETTINGS)
    ready = next(c for c in plan.conditions if c.type == "Ready")
    assert ready.reason == "AccessDenied" and "mallory@elsewhere.example" in ready.message
    assert plan.apply == () and plan.delete_pod
    assert [e.reason for e in plan.events] == ["AccessDenied"]


def test_access_through_a_group_from_the_identity_provider() -> None:
    groups = {"bob@hospital.example": ("prostate-ai",)}
    body = workspace(users=["bob@hospital.example"])
    body["metadata"]["annotations"] = {"cleanroom.dev/created-by": "bob@hospital.example"}
    plan = plan_workspace(
        body,
        observed(dataset=dataset(users=[], groups=["prostate-ai"]), user_groups=groups),
        SETTINGS,
    )
    assert "Pod" in kinds(plan)


class Unreadable(dict[str, tuple[str, ...]]):
    def get(self, *_: object) -> Any:
        raise AssertionError("group membership was read although no decision needed it")


def test_group_membership_is_not_read_for_users_the_access_list_names() -> None:
    plan = plan_workspace(
        workspace(users=["alice@hospital.example"]),
        observed(
            dataset=dataset(users=["alice@hospital.example"], groups=["prostate-ai"]),
            user_groups=Unreadable(),
        ),
        SETTINGS,
    )
    assert "Pod" in kinds(plan)
    # Nor when the Dataset names no group at all: membership could not grant anything.
    plan = plan_workspace(
        workspace(users=["mallory@elsewhere.example"]),
        observed(dataset=dataset(users=["alice@hospital.example"], groups=[]), user_groups=Unreadable()),
        SETTINGS,
    )
    assert next(c for c in plan.conditions if c.type == "Ready").reason == "AccessDenied"


def test_withdrawn_access_stops_a_running_workspace() -> None:
    plan = plan_workspace(workspace(), observed(dataset=dataset(users=[]), pod={"status": {}}), SETTINGS)
    assert plan.delete_pod and [e.reason for e in plan.events] == ["AccessRevoked"]


def test_materializer_first_then_the_notebook_pod() -> None:
    waiting = plan_workspace(workspace(), observed(job=None), SETTINGS)
    assert "Pod" not in kinds(waiting) and "Job" in kinds(waiting)
    assert reasons(waiting)["DatasetMounted"] == "Materializing"
    ready = plan_workspace(workspace(), observed(), SETTINGS)
    assert "Pod" in kinds(ready) and reasons(ready)["DatasetMounted"] == "SnapshotVerified"


def test_failed_verification_is_reported_and_no_notebook_runs() -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "digest mismatch"}]}}
    plan = plan_workspace(workspace(), observed(job=job), SETTINGS)
    assert (
        reasons(plan)["Ready"] == "SnapshotVerificationFailed"
        and "Pod" not in kinds(plan)
        and plan.delete_pod
    )


def test_failed_verification_names_the_file_the_copy_refused() -> None:
    """The Job says only that its back-off limit was reached; its pod's termination message says which object
    failed and why, and the admin reads that in Ready and DatasetMounted."""
    job = {
        "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}
    }
    refused = "PSN-X/1.2/3.4/5.6.dcm: sha256 does not match the manifest"
    plan = plan_workspace(workspace(), observed(job=job, job_failure=refused), SETTINGS)
    ready = next(c for c in plan.conditions if c.type == "Ready")
    mounted = next(c for c in plan.conditions if c.type == "DatasetMounted")
    assert refused in ready.message and "BackoffLimitExceeded" in ready.message and refused in mounted.message


def test_a_probe_pod_that_cannot_run_is_deleted() -> None:
    """On a simulated node the probe never finishes; it carries the notebook's labels, so it goes."""
    plan = plan_workspace(workspace(), observed(stray_probe=True), SETTINGS)
    assert ("v1", "Pod", "ws-seg-egress-probe") in plan.delete
    assert not [d for d in plan_workspace(workspace(), observed(), SETTINGS).delete if d[1] == "Pod"]


def test_unschedulable_pod_reports_the_scheduler_message() -> None:
    message = "0/4 nodes are available: 2 Insufficient nvidia.com/gpu."
    pod = {
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]
        }
    }
    plan = plan_workspace(workspace(), observed(pod=pod), SETTINGS)
    scheduled = next(c for c in plan.conditions if c.type == "Scheduled")
    assert scheduled.status == "False" and scheduled.message == message
    assert plan.phase == "Pending"


def test_ready_pod_makes_the_workspace_ready_with_node_and_url() -> None:
    pod = {
        "spec": {"nodeName": "gpu-a100-0"},
        "status": {
            "startTime": "2026-11-01T12:01:00Z",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        },
    }
    plan = plan_workspace(workspace(), observed(pod=pod), SETTINGS)
    assert plan.phase == "Running" and reasons(plan)["Ready"] == "Running"
    assert plan.status.node == "gpu-a100-0" and plan.status.gpus == 1
    assert plan.pinned == DIGEST
    assert "seg" in str(plan.status.url)


def test_egress_probe_unavailable_on_simulated_nodes() -> None:
    plan = plan_workspace(workspace(), observed(nodes_simulated=True), SETTINGS)
    egress = next(c for c in plan.conditions if c.type == "EgressRestricted")
    assert (egress.status, egress.reason) == ("Unknown", "ProbeUnavailable")


def test_running_false_stops_the_pod_makes_nothing_and_keeps_the_home_volume() -> None:
    plan = plan_workspace(workspace(running=False), observed(pod={"status": {}}), SETTINGS)
    assert plan.phase == "Stopped" and plan.delete_pod
    # Nothing is materialized for a Workspace nobody started; nothing made by an earlier start is deleted.
    assert kinds(plan) == [] and plan.delete == ()


def test_expiry_stops_then_deletes_after_the_grace_period() -> None:
    lifetime = {"expiresAfter": "1h", "idleTimeout": "2h"}
    expired = plan_workspace(
        workspace(lifetime=lifetime), observed(now=CREATED + timedelta(hours=2)), SETTINGS
    )
    assert expired.phase == "Expired" and expired.delete_pod and not expired.delete_workspace
    assert reasons(expired)["Expired"] == "LifetimeEnded"
    later = CREATED + timedelta(hours=1, seconds=SETTINGS.expiry_grace_seconds + 1)
    assert plan_workspace(workspace(lifetime=lifetime), observed(now=later), SETTINGS).delete_workspace


def test_idle_session_is_stopped_by_setting_running_false() -> None:
    body = workspace(lifetime={"expiresAfter": "168h", "idleTimeout": "30m"})
    body["metadata"]["annotations"]["cleanroom.dev/last-activity"] = "2026-11-01T12:00:00Z"
    plan = plan_workspace(body, observed(now=CREATED + timedelta(minutes=31), pod={"status": {}}), SETTINGS)
    assert plan.stop_requested and plan.delete_pod and reasons(plan)["Ready"] == "IdleTimeout"
    fresh = copy.deepcopy(body)
    fresh["metadata"]["annotations"]["cleanroom.dev/last-activity"] = "2026-11-01T12:20:00Z"
    assert not plan_workspace(
        fresh, observed(now=CREATED + timedelta(minutes=31), pod={"status": {}}), SETTINGS
    ).stop_requested


def test_pinned_snapshot_does_not_move_when_the_dataset_publishes_a_new_one() -> None:
    body = workspace()
    body["status"] = {"snapshot": {"digest": DIGEST}}
    newer = dataset()
    newer["status"]["snapshot"]["digest"] = "sha256:" + "cd" * 32
    plan = plan_workspace(body, observed(dataset=newer), SETTINGS)
    assert plan.pinned == DIGEST


def test_unknown_gpu_type_is_reported() -> None:
    body = workspace(resources={"gpu": 1, "gpuType": "nvidia-imaginary"})
    assert reasons(plan_workspace(body, observed(), SETTINGS))["Ready"] == "GPUTypeUnknown"


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("168h") == timedelta(days=7)


def test_resolved_image_digest_is_recorded_when_the_runtime_reports_it() -> None:
    pod = {
        "spec": {"nodeName": "n"},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"imageID": "registry.example.org/cleanroom/notebook@sha256:" + "e" * 64}],
        },
    }
    plan = plan_workspace(workspace(), observed(pod=pod), SETTINGS)
    assert plan.status.image_digest == "sha256:" + "e" * 64


def test_a_quota_refusal_is_reported_in_the_server_s_words() -> None:
    from cleanroom.workspaces import refused

    plan = plan_workspace(workspace(), observed(pod={"status": {}}), SETTINGS)
    message = 'pods "ws-seg" is forbidden: exceeded quota: cleanroom-workspaces, requested: requests.nvidia.com/gpu=1'
    result = refused(plan, "Pod", message)
    ready = next(c for c in result.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "QuotaExceeded") and message in ready.message
    assert result.phase == "Pending"
    assert [c.type for c in result.conditions].count("Ready") == 1


def test_a_new_pin_replaces_the_volume_and_the_job_that_filled_it() -> None:
    other = "sha256:" + "b" * 64
    copied_other = {
        "metadata": {"annotations": {"cleanroom.dev/snapshot": other}},
        "status": {"succeeded": 1},
    }
    plan = plan_workspace(workspace(), observed(job=copied_other), SETTINGS)
    assert reasons(plan)["Ready"] == "SnapshotChanged" and plan.delete_pod and plan.apply == ()
    assert set(plan.delete) == {
        ("batch/v1", "Job", "ws-seg-materialize"),
        ("v1", "PersistentVolumeClaim", "ws-seg-data"),
    }
    # The Job that copied the pinned snapshot is kept, and so is one from before snapshots were recorded.
    copied_pinned = {
        "metadata": {"annotations": {"cleanroom.dev/snapshot": DIGEST}},
        "status": {"succeeded": 1},
    }
    for job in (copied_pinned, JOB_DONE):
        plan = plan_workspace(workspace(), observed(job=job), SETTINGS)
        assert plan.delete == () and "Pod" in kinds(plan)
    job = next(m for m in plan.apply if m["kind"] == "Job")
    assert job["metadata"]["annotations"] == {"cleanroom.dev/snapshot": DIGEST}


def test_ready_events_tell_progress_as_normal_problems_as_warnings_and_skip_quiet_steps() -> None:
    from cleanroom.workspaces import ready_events

    starting = plan_workspace(workspace(), observed(job=None), SETTINGS)
    assert [(e.type, e.reason) for e in ready_events(None, starting)] == [("Normal", "MaterializingSnapshot")]
    assert ready_events("MaterializingSnapshot", starting) == ()
    scheduling = plan_workspace(workspace(), observed(), SETTINGS)
    assert (
        reasons(scheduling)["Ready"] == "Scheduling"
        and ready_events("MaterializingSnapshot", scheduling) == ()
    )
    denied = plan_workspace(workspace(users=["mallory@elsewhere.example"]), observed(), SETTINGS)
    # The plan's own AccessDenied Event says it; the Ready change adds no second one.
    assert ready_events("Running", denied) == ()
    unknown_gpu = plan_workspace(workspace(resources={"gpu": 1, "gpuType": "tpu-v9"}), observed(), SETTINGS)
    assert [(e.type, e.reason) for e in ready_events("Running", unknown_gpu)] == [
        ("Warning", "GPUTypeUnknown")
    ]


def test_a_plan_says_when_the_clock_alone_changes_it() -> None:
    # Created 2026-11-01 12:00 with a 168h lifetime: the expiry is the next deadline while idle time is
    # not counted (no pod running).
    plan = plan_workspace(workspace(), observed(), SETTINGS)
    assert plan.recheck_at == CREATED + timedelta(hours=168)
    # With the notebook running, the idle deadline comes first (2h after the last activity).
    active = workspace()
    active["metadata"]["annotations"] = {"cleanroom.dev/last-activity": "2026-11-01T12:03:00Z"}
    pod = {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}, "spec": {"nodeName": "n"}}
    plan = plan_workspace(active, observed(pod=pod), SETTINGS)
    assert plan.recheck_at == datetime(2026, 11, 1, 14, 3, tzinfo=UTC)
    # Past the expiry: the end of the grace period.
    late = observed(now=CREATED + timedelta(hours=169))
    plan = plan_workspace(workspace(), late, SETTINGS)
    assert plan.recheck_at == CREATED + timedelta(hours=168, seconds=SETTINGS.expiry_grace_seconds)


def test_another_policy_opening_the_notebook_stops_it_with_a_warning_and_an_audit_event() -> None:
    from cleanroom.workspaces.lifecycle import audit_transitions

    pod = {
        "spec": {"nodeName": "gpu-a100-0"},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]
        },
    }
    opener = {"metadata": {"name": "allow-egress"}, "spec": {"podSelector": {}, "egress": [{}]}}
    ours = {"metadata": {"name": "cleanroom-default-deny"}, "spec": {"podSelector": {}, "egress": [{}]}}
    assert plan_workspace(workspace(), observed(pod=pod, policies=(ours,)), SETTINGS).phase == "Running"
    plan = plan_workspace(workspace(), observed(pod=pod, policies=(ours, opener)), SETTINGS)
    assert plan.phase == "Failed" and plan.delete_pod and not any(m["kind"] == "Pod" for m in plan.apply)
    assert reasons(plan) == {"Ready": "EgressWidened", "EgressRestricted": "ForeignNetworkPolicy"}
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "EgressWidened")]
    assert "allow-egress" in plan.events[0].message
    actions = [a for a, _, _ in audit_transitions("Running", plan)]
    assert actions == ["workspace.egress.widened"]


def test_an_admitted_workspace_not_started_yet_has_its_namespace_guarded_and_nothing_made() -> None:
    plan = plan_workspace(workspace(running=False), observed(), SETTINGS)
    assert plan.phase == "Stopped" and plan.apply == () and plan.guard_namespace
    # A refused one is not: nothing at all is done in a namespace the Dataset does not admit.
    refused = plan_workspace(workspace(image="elsewhere.example/x:1"), observed(), SETTINGS)
    assert not refused.guard_namespace


def test_a_probe_that_reached_a_route_stops_the_notebook_and_keeps_the_probe_for_a_second_try() -> None:
    import json as json_

    from cleanroom.workspaces.lifecycle import audit_transitions

    report = json_.dumps({"reached": ["kubernetes-api"], "blocked": ["internet"]})
    probe = {"status": {"containerStatuses": [{"state": {"terminated": {"message": report}}}]}}
    pod = {"spec": {"nodeName": "real-0"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    plan = plan_workspace(workspace(), observed(pod=pod, probe=probe, nodes_simulated=False), SETTINGS)
    assert plan.phase == "Failed" and plan.delete_pod
    assert (
        reasons(plan)["Ready"] == "EgressReachable" and reasons(plan)["EgressRestricted"] == "EgressReachable"
    )
    assert "Pod" in kinds(plan) and not any(
        m["metadata"]["name"] == "ws-seg" for m in plan.apply if m["kind"] == "Pod"
    )
    assert "kubernetes-api" in plan.events[0].message and plan.events[0].type == "Warning"
    assert [a for a, _, _ in audit_transitions("Running", plan)] == ["workspace.egress.widened"]
