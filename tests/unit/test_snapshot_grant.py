"""The read grant document the operator writes, and when it renews it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanroom.snapshots import grant as grant_module
from cleanroom.snapshots.grant import Grant, issue_grant
from cleanroom.snapshots.signing import GRANT_KIND, MAX_BATCH, check_grant, seal_key

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KEY = seal_key("reader-secret")
SNAPSHOT = "sha256:" + "a" * 64


class FakeStore:
    """A store whose snapshot holds ``objects`` objects."""

    def __init__(self, objects: int) -> None:
        self.files = [{"digest": f"sha256:{i:064x}", "path": f"p/{i}.dcm", "size": 1} for i in range(objects)]
        self.written: dict[str, bytes] = {}

    def manifest(self, dataset: str, snapshot: str) -> dict[str, Any]:
        return {"files": self.files}

    def put_document(self, key: str, data: bytes) -> None:
        self.written[key] = data


def issue(objects: int) -> tuple[Grant, dict[str, Any], int]:
    store = FakeStore(objects)
    grant = issue_grant(
        store,  # type: ignore[arg-type]
        lambda key, lifetime: (
            f"https://s3.example/b/{key}?X-Amz-Expires={lifetime.seconds}&X-Amz-Signature=f00"
        ),
        seal_key=KEY,
        signer_url="http://cleanroom-grant-signer.cleanroom-system:8443",
        namespace="team",
        workspace="w",
        dataset="prostate",
        snapshot=SNAPSHOT,
        lifetime=timedelta(hours=1),
        now=NOW,
    )
    ((key, data),) = store.written.items()
    assert grant.url.startswith(f"https://s3.example/b/{key}?")
    return grant, json.loads(data), len(data)


def test_a_grant_is_the_same_size_for_ten_objects_and_for_twenty_thousand() -> None:
    assert issue(10)[2] == issue(20_000)[2] < 1024


def test_a_grant_names_the_snapshot_its_manifest_and_the_signer_under_the_operators_seal() -> None:
    grant, document, _ = issue(3)
    assert document["kind"] == GRANT_KIND and document["snapshot"] == SNAPSHOT
    assert document["expiresAt"] == "2026-11-26T10:00:00Z" == f"{grant.expires_at:%Y-%m-%dT%H:%M:%SZ}"
    assert document["manifest"].startswith(f"https://s3.example/b/snapshots/prostate/{'a' * 64}.json?")
    assert document["signer"] == "http://cleanroom-grant-signer.cleanroom-system:8443"
    assert "objects" not in document
    assert check_grant(document, KEY, NOW) is None


def test_a_grant_is_renewed_past_half_its_life() -> None:
    grant = Grant("https://x", "sha256:a", NOW, NOW + timedelta(hours=1))
    assert not grant.renewal_due(NOW + timedelta(minutes=29))
    assert grant.renewal_due(NOW + timedelta(minutes=30))


def test_the_materializer_asks_the_signer_a_batch_at_a_time_in_the_manifests_order(monkeypatch: Any) -> None:
    asked: list[list[str]] = []

    def signer(request: Any, what: str, opener: Any, first: bool = False) -> bytes:
        assert request.full_url == "http://signer:8443/v1/sign" and request.get_method() == "POST"
        body = json.loads(request.data)
        assert body["grant"] == {"snapshot": SNAPSHOT, "signer": "http://signer:8443"}
        asked.append(body["digests"])
        return json.dumps({"urls": {d: f"https://s3/{d}" for d in body["digests"]}}).encode()

    monkeypatch.setattr(grant_module, "fetch", signer)
    digests = [f"sha256:{i:064x}" for i in range(1_100)]
    urls = grant_module.ObjectURLs(
        {"snapshot": SNAPSHOT, "signer": "http://signer:8443"}, digests + digests[:5], None
    )  # type: ignore[arg-type]
    assert [urls[d] for d in digests] == [f"https://s3/{d}" for d in digests]
    assert [len(batch) for batch in asked] == [MAX_BATCH, MAX_BATCH, 100]
    assert [d for batch in asked for d in batch] == digests
