"""A forked ingest worker never inherits its parent's S3 clients: a client holds an open keep-alive
connection, and two workers reading answers from one inherited socket get each other's bytes (seen as a slice
quarantined out of 400 when the pipeline forked after listing an S3 source)."""

from __future__ import annotations

import multiprocessing

from cleanroom.ingest import pipeline
from cleanroom.snapshots import S3Location
from cleanroom.sources import S3Reader, _readers

READER = S3Reader("http://127.0.0.1:9", "source-bucket", access_key="key", secret_key="secret-key")
STORE = S3Location("http://127.0.0.1:9", "store-bucket", "key", "secret-key")


def _inherited(_: int) -> tuple[int, int]:
    return len(_readers._S3_CLIENTS), len(pipeline._STORES)


def test_a_forked_worker_makes_its_own_s3_clients() -> None:
    parent_reader_client = READER._client()  # made, not connected: the constructor sends nothing
    pipeline._store(STORE)
    assert READER._client() is parent_reader_client
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_inherited, [0]) == [(0, 0)]
    assert READER._client() is parent_reader_client
