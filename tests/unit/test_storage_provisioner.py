"""Which provisioner serves the snapshot storage class (handlers._kube.storage_provisioner): a passing API
error keeps the last answer, for a Workspace served a copy of its own on block storage must not be moved to
a shared copy (and its copy deleted) because one read failed; never read, the pass fails and is tried again."""

from __future__ import annotations

from typing import Any

import kubernetes.dynamic.exceptions
import pytest

from cleanroom.handlers import _kube


class _Refused(kubernetes.dynamic.exceptions.DynamicApiError):
    def __init__(self) -> None:
        self.reason = "Too Many Requests"
        self.status = 429


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    _kube._PROVISIONERS.clear()


def test_a_failed_read_keeps_the_last_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Any] = [{"provisioner": "ebs.csi.aws.com"}, _Refused()]

    def read(*_: Any, **__: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(_kube, "read", read)
    assert _kube.storage_provisioner("gp3", ttl=0) == "ebs.csi.aws.com"
    assert _kube.storage_provisioner("gp3", ttl=0) == "ebs.csi.aws.com"  # the read failed: as before


def test_never_read_the_pass_fails_rather_than_guess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_: Any, **__: Any) -> Any:
        raise _Refused()

    monkeypatch.setattr(_kube, "read", refused)
    with pytest.raises(_kube.StorageClassUnread, match="gp3"):
        _kube.storage_provisioner("gp3")


def test_the_default_class_is_the_newest_marked_default(monkeypatch: pytest.MonkeyPatch) -> None:
    marked = {"storageclass.kubernetes.io/is-default-class": "true"}
    classes = [
        {"metadata": {"name": "old", "annotations": marked, "creationTimestamp": "2026-01-01T00:00:00Z"}, "provisioner": "a"},
        {"metadata": {"name": "new", "annotations": marked, "creationTimestamp": "2026-06-01T00:00:00Z"}, "provisioner": "b"},
        {"metadata": {"name": "plain", "creationTimestamp": "2026-09-01T00:00:00Z"}, "provisioner": "c"},
    ]  # fmt: skip
    monkeypatch.setattr(_kube, "list_objects", lambda *_: classes)
    assert _kube.storage_provisioner("") == "b"
