"""Server-side apply retries a lost race (409) at once instead of leaving it to kopf's 60-second retry."""

from __future__ import annotations

from typing import Any

import kubernetes.dynamic.exceptions
import pytest

from cleanroom.handlers import _kube

QUOTA = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "team-a"}}


class Conflict(kubernetes.dynamic.exceptions.DynamicApiError):
    def __init__(self) -> None:
        self.status, self.body, self.reason = 409, '{"message": "the object has been modified"}', "Conflict"


class FakeDynamic:
    def __init__(self, conflicts: int) -> None:
        self.conflicts, self.calls = conflicts, 0

    def server_side_apply(self, *_args: Any, **_kwargs: Any) -> None:
        self.calls += 1
        if self.calls <= self.conflicts:
            raise Conflict()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(conflicts: int) -> FakeDynamic:
        client = FakeDynamic(conflicts)
        monkeypatch.setattr(_kube, "_dynamic", lambda: client)
        monkeypatch.setattr(_kube, "_resource", lambda *_: object())
        monkeypatch.setattr(_kube.time, "sleep", lambda _s: None)
        return client

    return install


def test_a_lost_race_is_retried_at_once(fake: Any) -> None:
    client = fake(2)
    _kube.apply(QUOTA)
    assert client.calls == 3


def test_a_conflict_that_persists_is_raised(fake: Any) -> None:
    client = fake(99)
    with pytest.raises(kubernetes.dynamic.exceptions.DynamicApiError):
        _kube.apply(QUOTA)
    assert client.calls == 5


CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "ws-seg-home", "namespace": "team-a"},
}


class Forbidden(kubernetes.dynamic.exceptions.DynamicApiError):
    def __init__(self) -> None:
        self.status, self.reason, self.headers = 403, "Forbidden", {}
        self.body = '{"message": "persistentvolumeclaims \\"ws-seg-home\\" is forbidden: exceeded quota"}'


class NotFound(kubernetes.dynamic.exceptions.DynamicApiError):
    def __init__(self) -> None:
        self.status, self.reason, self.headers, self.body = 404, "NotFound", {}, "{}"


class FakeClaims:
    """Volume claims as the API server holds them, behind a quota that is full."""

    def __init__(self, exists: bool, cache_behind: bool = False) -> None:
        self.exists, self.cache_behind = exists, cache_behind
        self.creates: list[str] = []
        self.reads: list[str] = []

    def get(self, name: str, namespace: str, resource_version: str = "") -> Any:
        self.reads.append(resource_version or "fresh")
        if not self.exists or (resource_version == "0" and self.cache_behind):
            raise kubernetes.dynamic.exceptions.NotFoundError(NotFound())
        return type("Found", (), {"to_dict": lambda _self: {"metadata": {"name": name}}})()

    def create(self, body: dict[str, Any], namespace: str, field_manager: str) -> None:
        self.creates.append(body["metadata"]["name"])
        raise Forbidden()  # quota admission charges a create even of a name that is taken


def test_an_existing_claim_is_read_from_the_watch_cache_not_created_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claims = FakeClaims(exists=True)
    monkeypatch.setattr(_kube, "_resource", lambda *_: claims)
    assert _kube.ensure_created(CLAIM)["metadata"]["name"] == "ws-seg-home"
    assert claims.creates == [] and claims.reads == ["0"]


def test_a_quota_refusal_of_a_claim_that_exists_is_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = FakeClaims(exists=True, cache_behind=True)
    monkeypatch.setattr(_kube, "_resource", lambda *_: claims)
    assert _kube.ensure_created(CLAIM)["metadata"]["name"] == "ws-seg-home"
    assert claims.creates == ["ws-seg-home"]


def test_a_quota_refusal_of_a_new_claim_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = FakeClaims(exists=False)
    monkeypatch.setattr(_kube, "_resource", lambda *_: claims)
    with pytest.raises(_kube.ApplyRefused, match="exceeded quota"):
        _kube.ensure_created(CLAIM)
