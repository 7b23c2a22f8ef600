"""A sealed read grant, and what the grant signer signs for it: only the sealed snapshot's objects, only while
the grant lives, never for longer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cleanroom.snapshots import SnapshotNotFound
from cleanroom.snapshots.signer import ObjectSigner
from cleanroom.snapshots.signing import (
    GRANT_KIND,
    MAX_BATCH,
    OBJECT_URL_LIFETIME,
    DigestIndex,
    Refusal,
    Signing,
    build_sealed_grant,
    decide_signing,
    seal_key,
)

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KEY = seal_key("reader-secret")
SNAPSHOT = "sha256:" + "a" * 64
OURS = ["sha256:" + c * 64 for c in "123"]
THEIRS = "sha256:" + "9" * 64


def sealed(**overrides: Any) -> dict[str, Any]:
    grant = build_sealed_grant(
        namespace="team",
        workspace="w",
        dataset="prostate",
        snapshot=SNAPSHOT,
        manifest_url="https://s3.example/b/manifest?sig",
        key=KEY,
        lifetime=timedelta(hours=1),
        now=NOW,
    )
    return {**grant, **overrides}


def index_of(dataset: str, snapshot: str) -> DigestIndex:
    assert (dataset, snapshot) == ("prostate", SNAPSHOT)
    return DigestIndex(OURS)


def decide(grant: dict[str, Any], digests: list[Any], now: datetime = NOW) -> Signing | Refusal:
    return decide_signing({"grant": grant, "digests": digests}, KEY, now, index_of)


def test_a_grant_names_the_snapshot_its_manifest_and_when_it_expires() -> None:
    grant = sealed()
    assert grant["kind"] == GRANT_KIND and grant["snapshot"] == SNAPSHOT
    assert grant["expiresAt"] == "2026-11-26T10:00:00Z"
    assert "objects" not in grant


def test_the_signer_signs_the_snapshots_own_objects_for_at_most_a_quarter_hour() -> None:
    assert decide(sealed(), OURS[:2]) == Signing("prostate", SNAPSHOT, tuple(OURS[:2]), OBJECT_URL_LIFETIME)


def test_object_urls_never_outlive_the_grant() -> None:
    late = NOW + timedelta(minutes=55)
    decision = decide(sealed(), OURS[:1], now=late)
    assert isinstance(decision, Signing) and decision.lifetime == timedelta(minutes=5)


def test_an_object_of_another_snapshot_is_refused() -> None:
    decision = decide(sealed(), [OURS[0], THEIRS])
    assert isinstance(decision, Refusal) and decision.status == 403 and THEIRS in decision.reason


@pytest.mark.parametrize(
    "altered",
    [
        {"snapshot": "sha256:" + "b" * 64},
        {"dataset": "other-dataset"},
        {"expiresAt": "2027-11-26T10:00:00Z"},
        {"namespace": "other-team"},
        {"seal": "0" * 64},
    ],
)
def test_a_grant_with_any_claim_changed_is_refused_before_anything_is_read(altered: dict[str, str]) -> None:
    def never(dataset: str, snapshot: str) -> DigestIndex:
        raise AssertionError("an unsealed grant made the signer read a manifest")

    decision = decide_signing({"grant": sealed(**altered), "digests": OURS}, KEY, NOW, never)
    assert isinstance(decision, Refusal) and decision.status == 403


def test_a_grant_sealed_with_another_key_is_refused() -> None:
    decision = decide_signing({"grant": sealed(), "digests": OURS}, seal_key("other"), NOW, index_of)
    assert isinstance(decision, Refusal) and decision.status == 403


def test_an_expired_grant_is_refused() -> None:
    decision = decide(sealed(), OURS, now=NOW + timedelta(hours=1))
    assert isinstance(decision, Refusal) and decision.status == 403 and "expired" in decision.reason


@pytest.mark.parametrize(
    "digests",
    [
        ["sha256:../../snapshots/other/x"],
        ["objects/sha256/" + "1" * 64],
        [SNAPSHOT.upper()],
        [7],
        [],
        OURS * (MAX_BATCH // 3 + 1),
    ],
)
def test_a_request_that_names_no_digest_or_too_many_is_refused(digests: list[Any]) -> None:
    decision = decide(sealed(), digests)
    assert isinstance(decision, Refusal) and decision.status == 400


def test_the_digest_index_holds_exactly_the_manifests_digests() -> None:
    index = DigestIndex(OURS + OURS[:1])
    assert len(index) == 3 and all(d in index for d in OURS)
    assert THEIRS not in index and "sha256:" + "0" * 64 not in index and "1" * 64 not in index


class FakeStore:
    def __init__(self) -> None:
        self.reads = 0

    def object_digests(self, dataset: str, snapshot: str) -> list[str]:
        self.reads += 1
        return list(OURS)


def test_the_signer_answers_with_object_urls_and_reads_each_manifest_once() -> None:
    store = FakeStore()
    signer = ObjectSigner(
        store, lambda key, lifetime: f"https://s3/{key}?{lifetime.seconds}", KEY, lambda: NOW
    )  # type: ignore[arg-type]
    for _ in range(3):
        status, body = signer.answer({"grant": sealed(), "digests": OURS[:2]})
        assert status == 200 and body["urls"] == {
            d: f"https://s3/objects/sha256/{d[7:]}?900" for d in OURS[:2]
        }
    assert body["expiresAt"] == "2026-11-26T09:15:00Z" and store.reads == 1
    status, body = signer.answer({"grant": sealed(), "digests": [THEIRS]})
    assert status == 403 and "urls" not in body


class BrokenStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def object_digests(self, dataset: str, snapshot: str) -> list[str]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"), [(SnapshotNotFound("no snapshot"), 404), (ConnectionRefusedError("store down"), 503)]
)
def test_a_manifest_the_signer_cannot_read_is_an_answer_not_a_dropped_connection(
    error: Exception, status: int
) -> None:
    signer = ObjectSigner(BrokenStore(error), lambda key, lifetime: key, KEY, lambda: NOW)  # type: ignore[arg-type]
    answered, body = signer.answer({"grant": sealed(), "digests": OURS[:1]})
    assert answered == status and "urls" not in body
