"""The read grant document and when the operator renews it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cleanroom.snapshots.grant import GRANT_KIND, Grant, build_grant

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_a_grant_names_exactly_the_manifest_and_the_objects_of_one_snapshot() -> None:
    signed: list[tuple[str, timedelta]] = []

    def presign(key: str, lifetime: timedelta) -> str:
        signed.append((key, lifetime))
        return f"https://s3.example/b/{key}?sig"

    manifest = {"files": [{"digest": "sha256:" + "1" * 64}, {"digest": "sha256:" + "2" * 64}]}
    document = build_grant(
        dataset="prostate",
        snapshot="sha256:" + "a" * 64,
        manifest=manifest,
        presign=presign,
        lifetime=timedelta(hours=1),
        now=NOW,
    )
    assert document["kind"] == GRANT_KIND and document["expiresAt"] == "2026-11-26T10:00:00Z"
    assert document["manifest"] == f"https://s3.example/b/snapshots/prostate/{'a' * 64}.json?sig"
    assert sorted(document["objects"]) == [f["digest"] for f in manifest["files"]]
    assert {key for key, _ in signed} == {
        f"snapshots/prostate/{'a' * 64}.json",
        f"objects/sha256/{'1' * 64}",
        f"objects/sha256/{'2' * 64}",
    }
    assert {lifetime for _, lifetime in signed} == {timedelta(hours=1)}


def test_a_grant_is_renewed_past_half_its_life() -> None:
    grant = Grant("https://x", "sha256:a", NOW, NOW + timedelta(hours=1))
    assert not grant.renewal_due(NOW + timedelta(minutes=29))
    assert grant.renewal_due(NOW + timedelta(minutes=30))
