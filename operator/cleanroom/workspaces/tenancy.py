"""Tenancy as one pure decision: may this Workspace, in this namespace, written by these people, exist over
this Dataset, and has a user it lists started it?

The people come from annotations that the cleanroom admission policy (charts/cleanroom/templates/
admission-policies.yaml) admits only when they equal the API server's ``request.userInfo.username``, never
from ``spec.users``, which anyone who may write the Workspace writes. Where that policy is not installed the
annotations prove nothing: docs/rbac.md says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cleanroom.api import (
    CREATED_BY_ANNOTATION,
    LAST_CHANGED_BY_ANNOTATION,
    STARTED_BY_ANNOTATION,
    Access,
)

ACCESS_DENIED = "AccessDenied"
WAITING_FOR_START = "WaitingForStart"


@dataclass(frozen=True)
class Accounts:
    """Writers of Workspaces that are not people: the operator's own account (it stops idle Workspaces).
    The hub needs no place here: the admission policy lets it change only spec.running, leaves
    last-changed-by to the people who changed the rest, and lets it alone name another user in started-by
    (the user it signed in)."""

    operator: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Tenancy:
    """The verdict. ``denial`` is empty when the Workspace may exist here; ``started_by`` is empty until a
    user the Dataset lists has started it (then, and only then, anything is materialized)."""

    created_by: str
    started_by: str
    denial: str = ""
    waiting: str = ""


def judge_tenancy(
    workspace: Mapping[str, object],
    access: Access,
    namespace_labels: Mapping[str, str],
    user_groups: Mapping[str, tuple[str, ...]],
    accounts: Accounts,
) -> Tenancy:
    """Check, in order: the namespace is one the Dataset admits; the creator (and the last to change the
    spec) is a listed user, a member of a listed group or holds the Dataset's admin role; and the user who
    started it is a listed user or group member."""
    metadata = workspace["metadata"]
    assert isinstance(metadata, Mapping)
    namespace = str(metadata["namespace"])
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    dataset = str(workspace["spec"]["dataset"]["name"])  # type: ignore[index]
    created_by = annotations.get(CREATED_BY_ANNOTATION, "")
    changed_by = annotations.get(LAST_CHANGED_BY_ANNOTATION, "") or created_by
    started_by = annotations.get(STARTED_BY_ANNOTATION, "") or created_by

    def groups(user: str) -> tuple[str, ...]:
        # Read only when the Dataset names groups: the map is read from the cluster on first use.
        return tuple(user_groups.get(user, ())) if access.groups or access.admin_groups else ()

    def listed(user: str) -> bool:
        return access.allows(user) or bool(access.groups and access.allows(user, groups(user)))

    def may_write(user: str) -> bool:
        return listed(user) or bool(access.admin_groups and access.administers(groups(user)))

    if not access.namespaces.admits(namespace, namespace_labels):
        return Tenancy(
            created_by,
            "",
            f"namespace {namespace} is not one that Dataset {dataset} admits (its spec.access.namespaces); "
            "create the Workspace in a namespace of the project, or ask the data steward to admit this one",
        )
    if not created_by:
        return Tenancy(
            "",
            "",
            f"the Workspace has no {CREATED_BY_ANNOTATION} annotation, so who created it is unknown; the "
            "cleanroom admission policy requires it (equal to your user name) where it is installed",
        )
    if not may_write(created_by):
        return Tenancy(
            created_by,
            "",
            f"{created_by} created it but is not a user of Dataset {dataset}, a member of its groups or of its "
            "admin groups (spec.access)",
        )
    if changed_by != created_by and changed_by not in accounts.operator and not may_write(changed_by):
        return Tenancy(
            created_by,
            "",
            f"{changed_by} last changed it but is not a user of Dataset {dataset}, a member of its groups or of "
            "its admin groups (spec.access)",
        )
    if started_by in accounts.operator or not listed(started_by):
        return Tenancy(
            created_by,
            "",
            waiting=(
                f"waiting for a user of Dataset {dataset} to start it ({started_by} is not one): sign in to the "
                f"hub and start it, or set spec.running to true with {STARTED_BY_ANNOTATION} set to your user name"
            ),
        )
    return Tenancy(created_by, started_by)
