"""The check Job's side of an export (`airlock.checker`): it reads only what its grant names, verifies every
byte against the digests the operator gave, and writes one result the operator accepts; a file or
fingerprints document changed in the store stops it without a result. A real HTTP server stands in for the
store's presigned URLs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from cleanroom.airlock import SnapshotFingerprints
from cleanroom.airlock.check_result import Subject, judge_result
from cleanroom.airlock.checker import CheckerStopped, check_quarantine
from cleanroom.airlock.store import CheckInputs, RequestKey, build_check_grant, fingerprints_key
from cleanroom.snapshots import canonical_json, content_digest
from tests.unit.test_airlock_copy import _Store

KEY = RequestKey("ns", "paper", "uid-1")


@pytest.fixture
def served() -> Iterator[str]:
    """The stand-in store of the copy's tests, serving presigned URLs as plain paths."""
    _Store.objects = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


SNAPSHOT = "sha256:" + "ab" * 32
METRICS = b"fold,dice\n1,0.871\n"
FINGERPRINTS = canonical_json(SnapshotFingerprints().to_json())


def grant(base: str, files: dict[str, bytes]) -> dict[str, Any]:
    """The operator's grant over ``files``, put in the stand-in store as the operator puts it."""
    entries = [{"path": p, "digest": content_digest(d), "size": len(d)} for p, d in files.items()]
    for entry, data in zip(entries, files.values(), strict=True):
        _Store.objects["/" + KEY.quarantined(str(entry["digest"]))] = data
    _Store.objects["/" + fingerprints_key("prostate", SNAPSHOT)] = FINGERPRINTS
    inputs = CheckInputs(entries, "prostate", SNAPSHOT, content_digest(FINGERPRINTS), {"maxBytes": 1000})
    document = build_check_grant(
        KEY,
        inputs,
        lambda k, _: f"{base}/{k}",
        lambda k, _: f"{base}/{k}",
        timedelta(minutes=15),
        datetime.now(UTC),
    )
    _Store.objects["/grant"] = json.dumps(document).encode()
    return document


def test_the_checker_judges_the_quarantined_files_and_writes_a_result_the_operator_accepts(
    served: str,
) -> None:
    grant(served, {"results/metrics.csv": METRICS, "scan.npy": b"\0" * 128 + b"DICM" + b"\0" * 64})
    written = check_quarantine(f"{served}/grant")
    stored = _Store.objects["/" + KEY.check_result]
    assert json.loads(stored) == written
    subject = Subject(
        "uid-1",
        SNAPSHOT,
        (
            ("results/metrics.csv", content_digest(METRICS)),
            ("scan.npy", content_digest(b"\0" * 128 + b"DICM" + b"\0" * 64)),
        ),
    )
    judged = judge_result(stored, subject)
    assert not judged.problem, judged.problem
    verdicts = {c["name"]: c["passed"] for c in judged.checks}
    assert verdicts["NoDicom"] is False and verdicts["NoIdentifiers"] is True
    # The policy the grant carries is the one judged: 1000 bytes in all.
    policy = next(c for c in judged.checks if c["name"] == "ExportPolicy")
    assert any("limit of 1000" in line for line in policy["lookedAt"])


def test_a_file_changed_in_the_store_stops_the_checker_without_a_result(served: str) -> None:
    document = grant(served, {"results/metrics.csv": METRICS})
    _Store.objects["/" + KEY.quarantined(document["files"][0]["digest"])] = b"fold,dice\n1,0.999\n"
    with pytest.raises(CheckerStopped, match=r"results/metrics\.csv: the bytes read do not match"):
        check_quarantine(f"{served}/grant")
    assert "/" + KEY.check_result not in _Store.objects


def test_emptied_fingerprints_stop_the_checker(served: str) -> None:
    """Fingerprints without the snapshot's objects would let every scan pass: the digest holds them."""
    grant(served, {"results/metrics.csv": METRICS})
    _Store.objects["/" + fingerprints_key("prostate", SNAPSHOT)] = canonical_json(
        {**SnapshotFingerprints().to_json(), "identifiers": {}, "objects": {}, "notDecoded": ["x"]}
    )
    with pytest.raises(CheckerStopped, match="fingerprints: the bytes read do not match"):
        check_quarantine(f"{served}/grant")


def test_a_grant_of_another_kind_is_refused(served: str) -> None:
    _Store.objects["/grant"] = json.dumps({"kind": "cleanroom.dev/export-upload-grant"}).encode()
    with pytest.raises(CheckerStopped, match="not point at an export check grant"):
        check_quarantine(f"{served}/grant")
