"""Read grants against the real S3 server and the grant signer: the materializer copies a snapshot with
nothing but one presigned URL; holding that grant, another snapshot's object, another Dataset's, a write, a
listing and a late read are each refused, by the signer or by the store itself."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cleanroom.snapshots import FileEntry, SnapshotError, build_manifest, manifest_key, object_key
from cleanroom.snapshots.grant import GRANT_URL_VARIABLE, GrantRefused, issue_grant, materialize_from_grant
from cleanroom.snapshots.signing import SIGN_PATH, seal_key
from cleanroom.snapshots.store import presigner
from tests.integration.audit_service_process import write_localhost_certificate
from tests.integration.conftest import grant_signer_url, s3_env, start_grant_signer
from tests.integration.test_dataset_ingest import s3_client, snapshot_store
from tests.integration.test_snapshot_cli_and_retention import publish_one

BUCKET = "cleanroom-snapshots"


@pytest.fixture(scope="module")
def signer_url() -> str:
    """The tests' grant signer (`python -m cleanroom.cli_signer`, the integration suite's own)."""
    snapshot_store().ensure_bucket()
    return grant_signer_url()


def grant(signer_url: str, dataset: str, snapshot: str, seconds: float = 600, signer_ca: str = "") -> str:
    store = snapshot_store()
    issued = issue_grant(
        store,
        presigner(store.location),
        seal_key=seal_key(s3_env()["S3_SECRET_KEY"]),
        signer_url=signer_url,
        namespace="team",
        workspace="w",
        dataset=dataset,
        snapshot=snapshot,
        lifetime=timedelta(seconds=seconds),
        signer_ca=signer_ca,
    )
    return issued.url


def publish(dataset: str, contents: list[bytes]) -> tuple[str, list[str]]:
    """A snapshot of ``dataset`` holding these objects; its digest and its objects' digests."""
    store = snapshot_store()
    digests = [store.put_object(data) for data in contents]
    files = [
        FileEntry(f"P/st/se/{i}.dcm", d, len(data), "P", "st", "se")
        for i, (d, data) in enumerate(zip(digests, contents, strict=True))
    ]
    manifest = build_manifest(
        dataset=dataset,
        files=files,
        source={"kind": "directory", "location": "/x"},
        method="Anonymize",
        options=[],
        key_id="discarded",
        quarantine={"files": 0, "report": ""},
        created_at="2026-12-02T00:00:00Z",
    )
    return store.publish(dataset, manifest), digests


def status_of(request: urllib.request.Request | str) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def ask_signer(signer_url: str, grant: dict[str, Any], digests: list[str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        signer_url + SIGN_PATH, data=json.dumps({"grant": grant, "digests": digests}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


def test_the_materializer_copies_a_snapshot_with_only_a_grant(
    tmp_path: Path, unique_name: str, signer_url: str
) -> None:
    digest, manifest = publish_one(unique_name, "2026-11-01T00:00:00Z")
    url = grant(signer_url, unique_name, digest)
    # The CLI the Job runs, with no store endpoint, bucket or keys in its environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEANROOM_SNAPSHOT", "S3_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "snapshot", "materialize-grant", str(tmp_path / "data")],
        env={**env, GRANT_URL_VARIABLE: url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    entry = manifest["files"][0]
    assert (tmp_path / "data" / entry["path"]).stat().st_size == entry["size"]
    assert json.loads((tmp_path / "data" / "MANIFEST.json").read_text())["digest"] == digest


def test_holding_a_grant_reads_nothing_but_its_own_snapshot_and_writes_nothing(
    unique_name: str, signer_url: str
) -> None:
    shared, ours_only, theirs_only, other_dataset = (f"{unique_name}-{n}".encode() * 64 for n in range(4))
    ours, (shared_digest, ours_digest) = publish(unique_name, [shared, ours_only])
    later, (_, later_digest) = publish(unique_name, [shared, theirs_only])
    elsewhere, (foreign_digest,) = publish(f"{unique_name}-other", [other_dataset])
    document = json.loads(urllib.request.urlopen(grant(signer_url, unique_name, ours), timeout=30).read())

    status, body = ask_signer(signer_url, document, [ours_digest, shared_digest])
    assert status == 200, body
    own_url = body["urls"][ours_digest]
    with urllib.request.urlopen(own_url, timeout=30) as response:
        assert response.read() == ours_only
    # An object content-addressed into both snapshots is this snapshot's own bytes: it is signed.
    assert status_of(body["urls"][shared_digest]) == 200

    # Another snapshot's object, of the same Dataset and of another: the signer refuses.
    for digest in (later_digest, foreign_digest):
        status, body = ask_signer(signer_url, document, [ours_digest, digest])
        assert status == 403 and digest in body["error"], body
    # The grant pointed at another snapshot, or another Dataset's: its seal no longer matches.
    for altered in ({"snapshot": later}, {"snapshot": elsewhere, "dataset": f"{unique_name}-other"}):
        status, body = ask_signer(signer_url, {**document, **altered}, [later_digest, foreign_digest])
        assert status == 403 and "seal" in body["error"], body
    # A key that is not a digest: refused before any signing.
    status, _ = ask_signer(signer_url, document, [f"sha256:../../snapshots/{unique_name}-other/x"])
    assert status == 400

    # The store: the manifest URL re-aimed at another manifest, or at a listing of the bucket.
    manifest_url = document["manifest"]
    other_manifest = manifest_url.replace(
        manifest_key(unique_name, ours), manifest_key(f"{unique_name}-other", elsewhere)
    )
    assert status_of(other_manifest) == 403
    listing = manifest_url.replace(f"/{manifest_key(unique_name, ours)}?", "?list-type=2&prefix=&")
    assert status_of(listing) == 403
    # A signed object URL used to overwrite or delete its object.
    assert status_of(urllib.request.Request(own_url, data=b"evil", method="PUT")) == 403
    assert status_of(urllib.request.Request(own_url, method="DELETE")) == 403
    assert s3_client().get_object(BUCKET, object_key(ours_digest)).read() == ours_only


def test_a_grant_past_its_life_is_refused_by_the_signer_and_the_store(
    tmp_path: Path, unique_name: str, signer_url: str
) -> None:
    ours, (digest,) = publish(unique_name, [unique_name.encode() * 64])
    short = grant(signer_url, unique_name, ours, seconds=3)
    document = json.loads(urllib.request.urlopen(short, timeout=30).read())
    status, body = ask_signer(signer_url, document, [digest])
    assert status == 200
    time.sleep(4)
    assert status_of(body["urls"][digest]) == 403  # object URLs never outlive the grant
    status, refusal = ask_signer(signer_url, document, [digest])
    assert status == 403 and "expired" in refusal["error"]
    with pytest.raises(GrantRefused, match="expired"):
        materialize_from_grant(short, tmp_path / "late")


def test_a_manifest_that_does_not_hash_to_the_snapshot_is_refused(
    tmp_path: Path, unique_name: str, signer_url: str
) -> None:
    digest, manifest = publish_one(unique_name, "2026-11-01T00:00:00Z")
    url = grant(signer_url, unique_name, digest)
    forged = json.dumps({**manifest, "files": []}).encode()
    s3_client().put_object(BUCKET, manifest_key(unique_name, digest), io.BytesIO(forged), len(forged))
    with pytest.raises(SnapshotError, match="does not hash to it"):
        materialize_from_grant(url, tmp_path / "data")
    assert not (tmp_path / "data" / "MANIFEST.json").exists()


@pytest.fixture(scope="module")
def tls_signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A grant signer serving HTTPS with a certificate of its own CA (as the chart serves it): its URL and the
    CA's PEM."""
    directory = tmp_path_factory.mktemp("signer-tls")
    cert, key = directory / "tls.crt", directory / "tls.key"
    write_localhost_certificate(cert, key)
    url, process = start_grant_signer("test-grant-signer-tls", (cert, key))
    try:
        yield url, cert.read_text()
    finally:
        process.terminate()


def _materialize(url: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEANROOM_SNAPSHOT", "S3_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "snapshot", "materialize-grant", str(directory)],
        env={**env, GRANT_URL_VARIABLE: url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_over_tls_the_materializer_trusts_the_signers_own_ca_and_nothing_else(
    tmp_path: Path, unique_name: str, tls_signer: tuple[str, str]
) -> None:
    """The grant names an HTTPS signer and its CA: the materializer copies the snapshot. An impostor (a
    certificate of another CA for the same address, even one the system trusted) gets no request: the
    materializer stops at the handshake, before sending the grant."""
    url, ca = tls_signer
    digest, _ = publish_one(unique_name, "2026-11-01T00:00:00Z")
    done = _materialize(grant(url, unique_name, digest, signer_ca=ca), tmp_path / "data")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "data" / "MANIFEST.json").read_text())["digest"] == digest

    impostor = tmp_path / "impostor"
    impostor.mkdir()
    write_localhost_certificate(impostor / "tls.crt", impostor / "tls.key")
    fake_url, fake = start_grant_signer(
        "test-grant-signer-impostor", (impostor / "tls.crt", impostor / "tls.key")
    )
    try:
        refused = _materialize(grant(fake_url, unique_name, digest, signer_ca=ca), tmp_path / "stolen")
    finally:
        fake.terminate()
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr or "certificate verify failed" in refused.stderr
    assert not (tmp_path / "stolen" / "MANIFEST.json").exists()


def test_the_tls_signer_answers_nothing_in_clear(tls_signer: tuple[str, str]) -> None:
    url, _ = tls_signer
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(url.replace("https://", "http://") + "/healthz", timeout=10).read()
