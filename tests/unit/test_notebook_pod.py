"""The notebook pod's way out: the single-user server on localhost behind the byte meter's container,
Jupyter's paths off the home, and the hub's settings that go with them."""

from __future__ import annotations

from typing import Any

from cleanroom.hub.config import configure
from cleanroom.hub.limits import clamp_activity, named_server_limit
from cleanroom.workspaces.manifests import build_service, server_port
from tests.unit.test_workspace_manifests import REF, SETTINGS, pod


def containers(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in manifest["spec"]["containers"]}


def test_the_server_listens_on_localhost_and_only_the_meter_takes_the_pods_port() -> None:
    notebook, meter = containers(pod())["notebook"], containers(pod())["meter"]
    assert "--ip=127.0.0.1" in notebook["args"] and f"--port={server_port(SETTINGS)}" in notebook["args"]
    assert "ports" not in notebook
    assert meter["ports"] == [
        {"name": "notebook", "containerPort": SETTINGS.notebook_port, "protocol": "TCP"}
    ]
    assert meter["args"][:2] == ["cleanroom", "notebook-meter"]
    assert f"--upstream=http://127.0.0.1:{server_port(SETTINGS)}" in meter["args"]
    assert f"--budget-bytes={SETTINGS.browser_bytes_per_window}" in meter["args"]
    # The Service (which the proxy reaches) targets the meter's port by name.
    assert build_service(REF, SETTINGS)["spec"]["ports"][0]["targetPort"] == "notebook"


def test_the_meter_runs_hardened_as_another_user_with_no_volume_of_the_users() -> None:
    notebook, meter = containers(pod())["notebook"], containers(pod())["meter"]
    assert meter["securityContext"]["runAsUser"] == SETTINGS.meter_run_as_user != SETTINGS.run_as_user
    assert meter["securityContext"]["readOnlyRootFilesystem"] is True
    assert meter["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Its one volume is its own state (the spent budget), which the notebook container does not mount.
    assert [m["name"] for m in meter["volumeMounts"]] == ["meter-state"]
    assert "meter-state" not in {m["name"] for m in notebook["volumeMounts"]}
    assert {"name": "meter-state", "emptyDir": {"sizeLimit": "1Mi"}} in pod()["spec"]["volumes"]
    assert meter["image"] == notebook["image"]


def test_nothing_but_the_server_runs_in_the_notebook_container_with_the_session_settings() -> None:
    """A probe's or hook's process starts with its container's environment, the hub token from the session
    Secret included; in the notebook container a kernel (same user, same PID namespace) reads it from
    /proc/<pid>/environ while it runs (tests/deployed/test_notebook_exits.py caught the readiness probe's
    every 10 s). The meter's container, another user's, checks that the server answers instead."""
    notebook, meter = containers(pod())["notebook"], containers(pod())["meter"]
    assert not {"readinessProbe", "livenessProbe", "startupProbe", "lifecycle"} & set(notebook)
    probe = " ".join(meter["readinessProbe"]["exec"]["command"])
    assert str(server_port(SETTINGS)) in probe and str(SETTINGS.notebook_port) in probe


def test_the_server_loads_no_user_configuration_and_no_user_jupyter_path() -> None:
    notebook = containers(pod())["notebook"]
    env = {e["name"]: e["value"] for e in notebook["env"]}
    assert env["JUPYTERHUB_DISABLE_USER_CONFIG"] == "1"
    assert env["JUPYTER_CONFIG_DIR"] == env["JUPYTER_CONFIG_PATH"] == "/etc/jupyter"
    assert env["JUPYTER_DATA_DIR"] == env["JUPYTER_PATH"] == "/usr/local/share/jupyter"
    assert env["PYTHONNOUSERSITE"] == "1"
    home = env["HOME"]
    searched = ("JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH", "JUPYTER_DATA_DIR", "JUPYTER_PATH")
    assert not any(env[name].startswith(home) for name in searched)
    # `env` is set on the container, which Kubernetes lets win over the hub's envFrom Secret.
    assert notebook["envFrom"][0]["secretRef"]["name"].endswith("-hub")


class _Config(dict):  # type: ignore[type-arg]
    def __getattr__(self, name: str) -> Any:
        return self.setdefault(name, _Config())

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def test_the_hub_gives_servers_an_activity_only_token_and_no_user_config() -> None:
    c = _Config()
    configure(
        c,
        {
            "CLEANROOM_HUB_ISSUER": "https://login.test",
            "CLEANROOM_HUB_AUDIENCE": "hub",
            "CLEANROOM_HUB_JWKS_FILE": "/dev/null",
            "CLEANROOM_HUB_METER_BUDGET_BYTES": "1000",
        },
    )
    assert c.Spawner.server_token_scopes == ["users:activity!user"]
    assert c.Spawner.disable_user_config is True
    assert c.JupyterHub.named_server_limit_per_user is named_server_limit
    assert c.WorkspaceSpawner.meter_budget_bytes == 1000


def test_activity_is_clamped_to_the_hubs_clock_and_cut_to_the_minute() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 5, 1, 12, 30, 45, 999999, tzinfo=UTC)
    assert clamp_activity(now + timedelta(minutes=30), now) == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    naive = datetime(2026, 5, 1, 12, 10, 7, 123456)
    assert clamp_activity(naive, now) == datetime(2026, 5, 1, 12, 10)
    assert clamp_activity(None, now) is None


class _Spawner:
    def __init__(self, running: bool, workspace_exists: bool) -> None:
        self.active, self.pending, self.exists = running, None, workspace_exists
        self.orm_spawner = object()

    async def poll(self) -> int | None:
        import asyncio

        await asyncio.sleep(0)  # a request to the API server: other handlers run meanwhile
        return None if self.active and self.exists else 0


class _User:
    def __init__(self, spawners: dict[str, _Spawner]) -> None:
        self.name, self.spawners, self.orm_spawners = "alice@hospital.example", spawners, dict(spawners)
        self.deleted: list[str] = []

    async def stop(self, name: str) -> None:
        spawner = self.spawners[name]
        if await spawner.poll() is not None:  # as JupyterHub's User.stop: a stopped server is cleaned up
            spawner.active = False

    async def _delete_spawner(self, spawner: _Spawner) -> None:
        self.deleted.append(next(n for n, s in self.spawners.items() if s is spawner))
        self.orm_spawners.pop(self.deleted[-1])


class _Db:
    def delete(self, _: Any) -> None: ...

    def commit(self) -> None: ...


def _alice_with_a_stale_server(monkeypatch: Any) -> tuple[_User, Any]:
    """alice, whose one Workspace is team/b, and whose server of the deleted team/a the hub holds as running."""
    from cleanroom.hub import limits

    workspace = {
        "metadata": {"namespace": "team", "name": "b"},
        "spec": {"users": ["alice@hospital.example"]},
    }
    monkeypatch.setattr(limits.workspace_api, "list_workspaces", lambda: [workspace])
    user = _User({"team--a": _Spawner(running=True, workspace_exists=False)})
    return user, type("Handler", (), {"current_user": user, "db": _Db()})()


def test_a_running_server_whose_workspace_was_deleted_does_not_hold_a_place(monkeypatch: Any) -> None:
    """alice's Workspace team/a was deleted while its server ran (its pod went with it); before the hub's
    next poll she starts team/b, her only other Workspace. The stale server counted against the limit of one,
    and the start answered 400; it is stopped and removed first. A server whose Workspace dropped her but
    still runs is left alone."""
    import asyncio

    user, handler = _alice_with_a_stale_server(monkeypatch)
    assert asyncio.run(named_server_limit(handler)) == 1
    assert user.deleted == ["team--a"] and "team--a" not in user.spawners
    still_running = _User({"team--c": _Spawner(running=True, workspace_exists=True)})
    handler.current_user = still_running
    asyncio.run(named_server_limit(handler))
    assert still_running.deleted == [] and still_running.spawners["team--c"].active


def test_starts_that_come_together_remove_a_stale_server_once(monkeypatch: Any) -> None:
    """Several Start buttons at once: each start counts the limit; the stale server is stopped and removed
    by one of them, and none fails on a server the other half removed (the deployed churn test)."""
    import asyncio

    user, handler = _alice_with_a_stale_server(monkeypatch)

    async def together() -> list[int]:
        return list(await asyncio.gather(*(named_server_limit(handler) for _ in range(4))))

    assert asyncio.run(together()) == [1, 1, 1, 1]
    assert user.deleted == ["team--a"]
