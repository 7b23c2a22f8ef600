"""The clients layer: TLS that always verifies, an S3 client that takes only URLs, and the moves that put them
there kept the behaviour their callers rely on."""

from __future__ import annotations

import datetime
import pickle
import ssl
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cleanroom._clients.s3 import EndpointError, S3Location, s3_client
from cleanroom._clients.tls import client_context, https_opener
from cleanroom.api import contract
from cleanroom.hub import names
from cleanroom.ingest import SnapshotReader
from cleanroom.snapshots import SnapshotError, SnapshotStore
from cleanroom.snapshots.store import presigner


def hospital_ca(path: Path) -> Path:
    """A self-signed CA certificate, as a hospital's own PKI would issue for its PACS or store."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital Root CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_a_client_context_verifies_certificates_and_host_names() -> None:
    context = client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_ca_bundle_adds_trust_and_keeps_verification_on(tmp_path: Path) -> None:
    context = client_context(str(hospital_ca(tmp_path / "ca.pem")))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(
        dict(entry[0] for entry in cert["subject"]).get("commonName") == "Hospital Root CA"
        for cert in context.get_ca_certs()
    )


def test_the_https_opener_uses_a_verifying_context() -> None:
    handlers = [h for h in https_opener().handlers if isinstance(h, urllib.request.HTTPSHandler)]
    assert handlers
    context = handlers[0]._context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("endpoint", ["minio:9000", "s3.example.org", "ftp://s3.example.org", "https://"])
def test_an_s3_endpoint_must_be_an_http_url(endpoint: str) -> None:
    with pytest.raises(EndpointError, match="must be an http:// or https:// URL"):
        s3_client(endpoint, "key", "secret")


def test_the_snapshot_store_still_reports_a_bad_endpoint_as_its_own_error() -> None:
    # Callers of the store (the Dataset handler, `cleanroom snapshot`) catch SnapshotError; the client moved
    # below the store, the error its callers see did not change.
    location = S3Location("minio:9000", "snapshots", "key", "secret")
    with pytest.raises(SnapshotError, match="must be an http:// or https:// URL"):
        SnapshotStore(location)
    with pytest.raises(SnapshotError, match="must be an http:// or https:// URL"):
        presigner(location)


def test_a_location_keeps_its_keys_out_of_logs() -> None:
    location = S3Location("https://s3.example.org", "snapshots", "AKIAEXAMPLE", "very-secret")
    assert "AKIAEXAMPLE" not in repr(location) and "very-secret" not in repr(location)


def test_a_snapshot_source_survives_the_trip_to_a_worker_process() -> None:
    # Ingest workers start by spawn and rebuild their reader from a pickle.
    reader = SnapshotReader(
        S3Location("https://s3.example.org", "snapshots", "k", "s"), "parent", "sha256:" + "a" * 64
    )
    assert pickle.loads(pickle.dumps(reader)) == reader


def test_the_hub_and_the_operator_name_a_server_with_one_function() -> None:
    assert names.server_name is contract.server_name
    assert names.MAX_LENGTH == contract.SERVER_NAME_MAX_LENGTH
