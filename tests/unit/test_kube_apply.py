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
