"""The Dataset reconcile's decisions (cleanroom.datasets), each without a cluster: which source is read with
which credentials, how the run de-identifies, when a pass has nothing to do or adopts a published snapshot,
when a run fails, and the status, Events and audit records of each step."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cleanroom import datasets
from cleanroom.api import DatasetSpec, Deidentification, DeidentificationMethod, Source, decode, overlay
from cleanroom.datasets import (
    DicomWebInput,
    DirectoryInput,
    IngestFailure,
    S3Input,
    SnapshotInput,
)
from cleanroom.ingest import NOT_ATTEMPTED, SOURCE_UNREACHABLE, WORKER_DIED, QuarantineEntry

DIGEST = "sha256:" + "ab" * 32
PINNED = "sha256:" + "cd" * 32
KEY = base64.b64encode(b"k" * 32)
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def spec(source: Mapping[str, Any] | None = None, **deid: Any) -> DatasetSpec:
    return decode(
        DatasetSpec,
        {
            "source": source if source is not None else {"directory": {"path": "/data/raw"}},
            "deidentification": deid or {"method": "Anonymize"},
            "access": {"users": ["alice@hospital.example"]},
        },
    )


class Secrets:
    """Secret keys by (namespace, name, key); a missing one raises as the operator's lookup does, and every
    lookup is remembered, so a test can tell which Secrets a decision read."""

    def __init__(self, values: Mapping[tuple[str, str, str], bytes]) -> None:
        self.values = dict(values)
        self.read: list[tuple[str, str, str]] = []

    def __call__(self, namespace: str, name: str, key: str) -> bytes:
        self.read.append((namespace, name, key))
        if (namespace, name, key) not in self.values:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        return self.values[(namespace, name, key)]


NO_SECRETS = Secrets({})


def ready(digest: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Ready", "status": "True"}], "snapshot": {"digest": digest}}}


# -- what is read --------------------------------------------------------------------------------------------


def test_a_directory_source_is_read_as_it_is_named_and_needs_no_secret() -> None:
    secrets = Secrets({})
    assert datasets.resolve_input("d", spec(), secrets, None) == DirectoryInput("/data/raw")
    assert secrets.read == []


def test_an_s3_source_takes_its_keys_from_the_secret_it_names() -> None:
    source = {
        "s3": {
            "endpoint": "https://s3.example",
            "bucket": "raw",
            "prefix": "ct/",
            "credentialsSecretRef": {"namespace": "keys", "name": "reader"},
        }
    }
    secrets = Secrets({("keys", "reader", "accessKey"): b"AK", ("keys", "reader", "secretKey"): b"SK"})
    found = datasets.resolve_input("d", spec(source), secrets, None)
    assert found == S3Input("https://s3.example", "raw", "ct/", "", "AK", "SK")
    assert "SK" not in repr(found)


def test_an_s3_source_without_credentials_is_read_anonymously() -> None:
    source = {"s3": {"endpoint": "https://s3.example", "bucket": "open"}}
    assert datasets.resolve_input("d", spec(source), NO_SECRETS, None) == S3Input(
        "https://s3.example", "open", "", ""
    )


def test_a_dicomweb_source_prefers_a_token_and_reads_no_password_then() -> None:
    ref = {"namespace": "keys", "name": "pacs"}
    source = {"dicomweb": {"url": "https://pacs.example/dicom-web", "credentialsSecretRef": ref}}
    secrets = Secrets({("keys", "pacs", "token"): b"T", ("keys", "pacs", "password"): b"P"})
    found = datasets.resolve_input("d", spec(source), secrets, None)
    assert found == DicomWebInput("https://pacs.example/dicom-web", (), token="T")
    assert secrets.read == [("keys", "pacs", "token")]


def test_a_dicomweb_source_without_a_token_signs_in_with_user_name_and_password() -> None:
    ref = {"namespace": "keys", "name": "pacs"}
    source = {
        "dicomweb": {
            "url": "https://pacs.example/dicom-web",
            "studyInstanceUIDs": ["1.2.3"],
            "credentialsSecretRef": ref,
        }
    }
    secrets = Secrets({("keys", "pacs", "username"): b"u", ("keys", "pacs", "password"): b"p"})
    found = datasets.resolve_input("d", spec(source), secrets, None)
    assert found == DicomWebInput("https://pacs.example/dicom-web", ("1.2.3",), "u", "p", "")


def test_a_missing_source_secret_fails_with_its_name_and_what_to_do() -> None:
    source = {
        "s3": {
            "endpoint": "https://s3.example",
            "bucket": "raw",
            "credentialsSecretRef": {"namespace": "keys", "name": "gone"},
        }
    }
    with pytest.raises(IngestFailure) as failure:
        datasets.resolve_input("d", spec(source), NO_SECRETS, None)
    assert failure.value.reason == "SecretNotFound"
    assert "keys/gone" in str(failure.value) and "fix the reference in spec.source" in str(failure.value)


def test_a_dataset_source_reads_its_pinned_snapshot_or_else_the_parents_ready_one() -> None:
    pinned = spec({"dataset": {"name": "site-a", "snapshot": PINNED}})
    following = spec({"dataset": {"name": "site-a"}})
    assert datasets.resolve_input("d", pinned, NO_SECRETS, ready(DIGEST)) == SnapshotInput("site-a", PINNED)
    assert datasets.resolve_input("d", following, NO_SECRETS, ready(DIGEST)) == SnapshotInput(
        "site-a", DIGEST
    )


@pytest.mark.parametrize(
    "parent",
    [
        None,
        {"status": {"conditions": [{"type": "Ready", "status": "False"}], "snapshot": {"digest": DIGEST}}},
    ],
)
def test_a_dataset_source_without_a_ready_snapshot_waits_for_one(parent: dict[str, Any] | None) -> None:
    with pytest.raises(IngestFailure) as failure:
        datasets.resolve_input("d", spec({"dataset": {"name": "site-a"}}), NO_SECRETS, parent)
    assert failure.value.reason == "SourceDatasetNotReady"
    assert '"site-a"' in str(failure.value)


def test_a_spec_without_a_source_is_refused() -> None:
    # The CRD's rule admits no such spec; the plan still refuses it rather than read nothing.
    empty = replace(spec(), source=Source())
    with pytest.raises(IngestFailure) as failure:
        datasets.resolve_input("lung", empty, NO_SECRETS, None)
    assert failure.value.reason == "InvalidSource" and "lung" in str(failure.value)


# -- how it is de-identified ---------------------------------------------------------------------------------


def test_anonymize_uses_a_fresh_key_each_run_and_reads_no_secret() -> None:
    secrets = Secrets({})
    first = datasets.deid_config(spec(), secrets)
    second = datasets.deid_config(spec(), secrets)
    assert first.method is DeidentificationMethod.ANONYMIZE
    assert first.keyring.key != second.keyring.key
    assert secrets.read == []


def test_pseudonymize_uses_the_sites_key_and_its_pseudonym_table() -> None:
    deid = {
        "method": "Pseudonymize",
        "keySecretRef": {"namespace": "keys", "name": "site", "key": "key"},
        "pseudonymTableSecretRef": {"namespace": "keys", "name": "table", "key": "csv"},
        "options": ["CleanDescriptors"],
    }
    secrets = Secrets(
        {("keys", "site", "key"): KEY, ("keys", "table", "csv"): b"MRN1, P-001\nbad\nMRN2,P-002\n"}
    )
    config = datasets.deid_config(spec(**deid), secrets)
    assert config.keyring.key == b"k" * 32
    assert config.pseudonym_table == {"MRN1": "P-001", "MRN2": "P-002"}
    assert [o.value for o in config.options] == ["CleanDescriptors"]


def test_pseudonymize_without_a_key_reference_fails_as_key_missing() -> None:
    # The CRD's rule admits no such spec either.
    without_key = replace(spec(), deidentification=Deidentification(DeidentificationMethod.PSEUDONYMIZE))
    with pytest.raises(IngestFailure) as failure:
        datasets.deid_config(without_key, NO_SECRETS)
    assert failure.value.reason == "KeyMissing"


def test_a_short_key_fails_as_invalid_and_a_missing_one_as_not_found() -> None:
    deid = {"method": "Pseudonymize", "keySecretRef": {"namespace": "keys", "name": "site"}}
    with pytest.raises(IngestFailure) as short:
        datasets.deid_config(spec(**deid), Secrets({("keys", "site", "key"): b"short"}))
    assert short.value.reason == "KeyInvalid" and "replace the key" in str(short.value)
    with pytest.raises(IngestFailure) as missing:
        datasets.deid_config(spec(**deid), NO_SECRETS)
    assert missing.value.reason == "SecretNotFound" and "keys/site" in str(missing.value)


# -- whether a pass has anything to do -----------------------------------------------------------------------


def dataset(generation: int = 2, status: Mapping[str, Any] | None = None, **spec_: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "lung", "uid": "u-1", "generation": generation},
        "spec": spec_
        or {"source": {"directory": {"path": "/raw"}}, "deidentification": {"method": "Anonymize"}},
        "status": dict(status or {}),
    }


def test_a_ready_dataset_of_this_generation_is_left_alone_and_a_changed_or_failed_one_is_not() -> None:
    assert datasets.up_to_date(dataset(2, {"observedGeneration": 2, "phase": "Ready"}))
    assert not datasets.up_to_date(dataset(3, {"observedGeneration": 2, "phase": "Ready"}))
    assert not datasets.up_to_date(dataset(2, {"observedGeneration": 2, "phase": "Failed"}))
    assert not datasets.up_to_date(dataset(1))


def test_the_fingerprint_follows_source_and_deidentification_not_access_or_retention() -> None:
    base = {"source": {"directory": {"path": "/raw"}}, "deidentification": {"method": "Anonymize"}}
    same = {**base, "access": {"users": ["bob"]}, "retention": {"keepSnapshots": 1}, "description": "x"}
    other = {**base, "source": {"directory": {"path": "/raw2"}}}
    assert datasets.ingest_fingerprint(base) == datasets.ingest_fingerprint(same)
    assert datasets.ingest_fingerprint(base) != datasets.ingest_fingerprint(other)
    assert datasets.snapshot_origin(dataset(**same)) == {
        "uid": "u-1",
        "specHash": datasets.ingest_fingerprint(base),
    }


def test_a_snapshot_published_for_this_origin_is_adopted_and_another_origins_is_not() -> None:
    origin = datasets.snapshot_origin(dataset())
    published = [
        (PINNED, {"origin": {**origin, "uid": "another-dataset-of-that-name"}}),
        (DIGEST, {"origin": dict(origin)}),
    ]
    assert datasets.adoptable(published, origin) == (DIGEST, {"origin": dict(origin)})
    assert datasets.adoptable(published[:1], origin) is None


# -- a run ---------------------------------------------------------------------------------------------------


def test_a_run_starts_by_saying_how_many_files_and_from_where() -> None:
    effects = datasets.ingest_started("lung", 7, "s3://raw/ct/")
    assert effects.status is not None
    assert (effects.status.phase, effects.status.condition.reason) == ("Ingesting", "Ingesting")
    assert overlay({}, effects.status.fields) == {"progress": {"filesDone": 0, "filesTotal": 7}}
    assert [e.reason for e in effects.events] == ["IngestStarted"]
    (audit,) = effects.audit
    assert (audit.action, audit.resources, audit.reason) == (
        "dataset.ingest.started",
        {"dataset": "lung"},
        "7 files from s3://raw/ct/",
    )


def test_a_source_without_files_fails_before_anything_is_said() -> None:
    with pytest.raises(IngestFailure) as failure:
        datasets.ingest_started("lung", 0, "/data/raw")
    assert failure.value.reason == "SourceEmpty" and "/data/raw" in str(failure.value)


def test_the_first_outage_is_said_at_once_and_a_dead_worker_has_a_reason_of_its_own() -> None:
    down = datasets.outage_stops_run(QuarantineEntry("a.dcm", SOURCE_UNREACHABLE, "timed out"))
    died = datasets.outage_stops_run(QuarantineEntry("b.dcm", WORKER_DIED, "killed"))
    assert (down.phase, down.condition.status, down.condition.reason) == (
        "Failed",
        "False",
        SOURCE_UNREACHABLE,
    )
    assert down.condition.message == "stopping the ingest: a.dcm: timed out"
    assert died.condition.reason == "IngestWorkerDied"


@dataclass
class Run:
    files: list[object] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    failed: list[QuarantineEntry] = field(default_factory=list)

    @property
    def outage(self) -> QuarantineEntry | None:
        return next((f for f in self.failed if f.reason != NOT_ATTEMPTED), None)


def test_a_run_with_an_outage_is_not_published_and_says_what_was_done_and_not_tried() -> None:
    run = Run(
        files=[object()] * 4,
        quarantined=[QuarantineEntry("q.dcm", "BurnedInAnnotation", "text")],
        failed=[
            QuarantineEntry("f1.dcm", WORKER_DIED, "killed"),
            QuarantineEntry("f2.dcm", WORKER_DIED, "killed"),
            QuarantineEntry("n.dcm", NOT_ATTEMPTED, "not tried"),
        ],
    )
    failure = datasets.run_failure(run)
    assert failure is not None and failure.reason == "IngestWorkerDied"
    assert "2 files failed (WorkerDied; first: f1.dcm: killed)" in str(failure)
    assert "with 5 files done and 1 not tried, and nothing was published" in str(failure)
    assert datasets.run_failure(Run(files=[object()], quarantined=run.quarantined)) is None


def test_a_published_run_tells_and_audits_each_quarantined_file_then_the_snapshot() -> None:
    long = QuarantineEntry("x" * 2000, "ResidualIdentifier", "PatientName in StudyDescription")
    effects = datasets.ingest_finished(
        "lung", DIGEST, 12, [QuarantineEntry("a.dcm", "NotDicom", "no preamble"), long]
    )
    assert effects.status is None
    assert [(e.type, e.reason) for e in effects.events] == [("Warning", "FileQuarantined")] * 2
    assert effects.events[0].message == "a.dcm: NotDicom: no preamble"
    assert len(effects.events[1].message) == 1000
    assert [(a.action, a.outcome) for a in effects.audit] == [
        ("dataset.file.quarantined", "failure"),
        ("dataset.file.quarantined", "failure"),
        ("snapshot.published", "success"),
        ("dataset.ingest.finished", "success"),
    ]
    assert effects.audit[0].resources == {"dataset": "lung", "file": "a.dcm"}
    assert effects.audit[-1].reason == "12 files kept, 2 quarantined"


# -- ready, retention, failure -------------------------------------------------------------------------------

SUMMARY = {"digest": DIGEST, "shortDigest": "abababababab", "files": 10, "patients": 3, "bytes": 100}


def test_ready_carries_the_snapshot_its_quarantine_the_spec_it_is_for_and_full_progress() -> None:
    effects = datasets.snapshot_ready(SUMMARY, {"files": 2, "items": []}, "sha256:spec")
    assert effects.status is not None
    change = effects.status
    assert (change.phase, change.condition.status, change.condition.reason) == (
        "Ready",
        "True",
        "SnapshotPublished",
    )
    assert change.condition.message == "snapshot abababababab published: 10 files, 3 patients, 2 quarantined"
    fields = overlay({}, change.fields)  # the typed status as the CRD takes it
    assert fields["snapshot"] == SUMMARY and fields["ingestedSpec"] == "sha256:spec"
    assert fields["progress"] == {"filesDone": 12, "filesTotal": 12}
    assert [(e.type, e.reason, e.message) for e in effects.events] == [
        ("Normal", "SnapshotPublished", change.condition.message)
    ]
    assert effects.audit == ()


def test_retention_never_prunes_the_ready_snapshot_or_one_a_workspace_pins() -> None:
    assert datasets.kept_by_retention(DIGEST, {PINNED}) == {DIGEST, PINNED}
    effects = datasets.snapshots_pruned("lung", [PINNED])
    assert [e.reason for e in effects.events] == ["SnapshotPruned"]
    assert [(a.action, a.resources) for a in effects.audit] == [
        ("snapshot.pruned", {"dataset": "lung", "snapshot": PINNED})
    ]
    assert datasets.snapshots_pruned("lung", []) == datasets.Effects()


def test_a_failed_pass_says_why_warns_audits_and_backs_off_to_ten_minutes() -> None:
    effects = datasets.failed("lung", IngestFailure("SecretNotFound", "Secret keys/site does not exist"))
    assert effects.status is not None
    assert (effects.status.phase, effects.status.condition.reason) == ("Failed", "SecretNotFound")
    assert [(e.type, e.reason) for e in effects.events] == [("Warning", "SecretNotFound")]
    (audit,) = effects.audit
    assert (audit.action, audit.outcome, audit.reason) == (
        "dataset.ingest.failed",
        "failure",
        "SecretNotFound: Secret keys/site does not exist",
    )
    assert [datasets.backoff(r) for r in (0, 1, 2, 5, 6, 20)] == [15, 30, 60, 480, 600, 600]


def test_a_status_change_keeps_the_other_fields_and_moves_the_transition_only_on_a_change() -> None:
    before = dataset(
        4,
        {
            "snapshot": {"digest": PINNED},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Ingesting",
                    "lastTransitionTime": "2026-04-30T00:00:00Z",
                }
            ],
        },
    )
    still_false = datasets.outage_stops_run(QuarantineEntry("a", SOURCE_UNREACHABLE, "down")).applied_to(
        before, NOW
    )
    assert still_false["snapshot"] == {"digest": PINNED}
    assert still_false["observedGeneration"] == 4 and still_false["phase"] == "Failed"
    (condition,) = still_false["conditions"]
    assert condition["lastTransitionTime"] == "2026-04-30T00:00:00Z" and condition["observedGeneration"] == 4
    now_true = datasets.snapshot_ready(SUMMARY, {"files": 0}, "s").status
    assert now_true is not None
    later = NOW + timedelta(minutes=1)
    assert now_true.applied_to(before, later)["conditions"][0]["lastTransitionTime"] == "2026-05-01T12:01:00Z"
