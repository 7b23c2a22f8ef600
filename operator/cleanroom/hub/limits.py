"""What the hub stores for a single-user server, held to what the hub itself observes.

A server's token may report activity (`users:activity`), and the user reads the stored times back from
outside through the hub's API: if the hub kept any value the reporter chose (microseconds, a time in the
future, per named server, with named servers unlimited), the hub would relay data past the notebook
pod's egress policy. So every stored activity time is clamped to the hub's own clock and cut to the
minute, and a user has at most as many named servers as Workspaces that list them. What remains is
whether there was activity in a minute: the idle cull needs exactly that."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from cleanroom.hub import workspace_api
from cleanroom.hub.workspace_view import visible_to


def clamp_activity(moment: datetime | None, now: datetime) -> datetime | None:
    """Not after the hub's clock, to the minute; naive stays naive (JupyterHub stores naive UTC)."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    clamped = min(aware, now).replace(second=0, microsecond=0)
    return clamped if moment.tzinfo else clamped.astimezone(UTC).replace(tzinfo=None)


def _on_set(target: Any, value: datetime | None, oldvalue: Any, initiator: Any) -> datetime | None:
    return clamp_activity(value, datetime.now(UTC))


def install_activity_clamp() -> None:
    """Every write of a user's or server's last_activity, whoever makes it (the activity API, the proxy's
    poll, a spawn), goes through `clamp_activity`."""
    from jupyterhub import orm
    from sqlalchemy import event

    for attribute in (orm.Spawner.last_activity, orm.User.last_activity):
        if not event.contains(attribute, "set", _on_set):
            event.listen(attribute, "set", _on_set, retval=True)


_TIDYING: dict[str, asyncio.Lock] = {}
LOGGER = logging.getLogger("cleanroom.hub.limits")


async def named_server_limit(handler: Any) -> int:
    """JupyterHub's `named_server_limit_per_user`: as many named servers as Workspaces list the user.
    Servers of theirs that are not a Workspace of theirs (a name tried once, a Workspace since deleted
    or that dropped them) are removed first, unless running. A server the hub still holds as running whose
    Workspace was deleted with its pod is stopped here, as the hub's next poll would: until then it counted
    against the limit, and starting another Workspace answered 400 (seen in the deployed suite)."""
    user = handler.current_user
    if user is None:
        return 1
    items = await asyncio.to_thread(workspace_api.list_workspaces)
    mine = visible_to(user.name, items)
    # One tidy at a time per user: starts come together (several Start buttons, a script), and two of them
    # stopping or removing the same stale server would each find it half gone.
    async with _TIDYING.setdefault(user.name, asyncio.Lock()):
        for name in [n for n in user.orm_spawners if n and n not in mine]:
            spawner = user.spawners[name]
            try:
                if await _running_without_its_workspace(spawner):
                    await user.stop(name)  # polls again, and stops nothing that still runs
                if not spawner.active and not spawner.pending:
                    # As JupyterHub's DELETE /users/:name/servers/:server?remove=true does it.
                    await user._delete_spawner(spawner)
                    handler.db.delete(spawner.orm_spawner)
                    user.spawners.pop(name, None)
                    handler.db.commit()
            except Exception as error:  # tidying is a courtesy: the start itself goes on
                LOGGER.warning("the stale server %s of %s was not removed: %s", name, user.name, error)
    # 0 would mean "no limit" to JupyterHub; a user with no Workspace may have none.
    return max(1, len(mine))


async def _running_without_its_workspace(spawner: Any) -> bool:
    """The hub holds the server as running, nothing is under way on it, and its poll says it is not."""
    idle = spawner.active and not spawner.pending
    # Checked again after the poll: the hub may have begun stopping it meanwhile.
    return bool(idle and await spawner.poll() is not None and spawner.active and not spawner.pending)
