"""The hub's standard-library SigV4 presigner signs exactly what minio's does (so any S3 server that honours
minio's links honours the hub's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from minio import Minio

from cleanroom._clients.presign import Signer, presigned_get

WHEN = datetime(2026, 11, 20, 12, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("endpoint", "key"),
    [
        ("http://127.0.0.1:7070", "exports/prostate-ai/paper/uid/outbox/results/metrics.csv"),
        ("https://s3.example.org", "exports/ns/a b/uid/outbox/figures/roc (final)+v2.png"),
    ],
)
def test_the_signature_is_minios(endpoint: str, key: str) -> None:
    signer = Signer(endpoint, "cleanroom-snapshots", "AKIAEXAMPLE", "secret/key+example", "us-east-1")
    host = endpoint.split("://", 1)[1]
    client = Minio(
        host, "AKIAEXAMPLE", "secret/key+example", secure=endpoint.startswith("https"), region="us-east-1"
    )
    expected = client.presigned_get_object(
        "cleanroom-snapshots", key, timedelta(minutes=5), request_date=WHEN
    )
    assert presigned_get(signer, key, timedelta(minutes=5), WHEN) == expected


def test_a_lifetime_beyond_seven_days_is_refused() -> None:
    with pytest.raises(ValueError, match="seven days"):
        presigned_get(Signer("http://s3", "b", "a", "s"), "k", timedelta(days=8))
