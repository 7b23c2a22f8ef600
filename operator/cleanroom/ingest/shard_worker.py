"""A Dataset's ingest as an Indexed Job, the shard pod's side (`cleanroom ingest-shard`): de-identify one
shard of the run and upload its objects and its result.

The pod holds no storage key. Its grant (``CLEANROOM_INGEST_GRANT_URL``) is the presigned URL of the run's
plan (``ingest.sharded``): presigned reads of its shard's plan, which lists each source file with a
presigned read URL, and an upload policy that admits only the run's ``out/`` prefix. Its shard is the Job's
completion index (``JOB_COMPLETION_INDEX``). The key to de-identify with comes from the run's Secret, and
must be the key the plan names (a run is one key, or its pseudonyms would not join up).

A shard whose result is already stored is done (a replaced Job, or an index that succeeded before its pod
was counted): the pod exits at once. Otherwise it runs the same pipeline as the in-process ingest
(``pipeline.run``, one worker process per core of the pod), and a run that meets an outage exits non-zero
without a result, so that the Job retries the index alone.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any

import urllib3

from cleanroom._clients.first_contact import read_first
from cleanroom._clients.tls import https_opener
from cleanroom.api import BurnedInAnnotationPolicy, DeidentificationMethod, DeidentificationOption
from cleanroom.api.contract import INGEST_GRANT_VARIABLE, INGEST_KEY_VARIABLE, INGEST_TABLE_VARIABLE
from cleanroom.deid import CleanFile, DeidConfig, Keyring
from cleanroom.ingest.pipeline import IngestResult, Limits, file_entry, run
from cleanroom.ingest.sharded import entry_to_json
from cleanroom.snapshots import FileEntry, content_digest
from cleanroom.sources import DEFAULT_MAX_FILE_BYTES, Skipped, read_at_most


class ShardRefused(RuntimeError):
    """The shard cannot run as granted (a key that is not the run's, a plan that cannot be read)."""


@dataclass(frozen=True)
class UrlReader:
    """A shard's source files, each read through its presigned URL (a ``sources.SourceReader``)."""

    urls: tuple[tuple[str, str], ...] = field(repr=False)

    def items(self) -> list[str]:
        return [item for item, _url in self.urls]

    def skipped(self) -> list[Skipped]:
        return []

    @functools.cached_property
    def _by_item(self) -> dict[str, str]:
        return dict(self.urls)

    def read(self, item: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        response = _pool().request("GET", self._by_item[item], preload_content=False)
        try:
            if response.status != 200:
                raise OSError(f"reading {item} answered HTTP {response.status}")
            length = response.headers.get("Content-Length")
            return read_at_most(response, item, limit, int(length) if length else None)
        finally:
            response.release_conn()

    def describe(self) -> dict[str, str]:
        return {"kind": "shard", "location": "presigned URLs"}


def multipart(fields: list[tuple[str, str]], data: bytes) -> tuple[bytes, str]:
    """An S3 POST Object form (RFC 7578): the policy's fields in order, then the file last."""
    boundary = "cleanroom-" + secrets.token_hex(16)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="object"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body = b"".join(parts) + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class PostSink:
    """Uploads each clean file under ``<prefix>objects/<hex>`` with the run's POST policy (a ``Sink``)."""

    url: str
    prefix: str
    fields: tuple[tuple[str, str], ...] = field(repr=False)

    def upload(self, key: str, data: bytes) -> None:
        body, content_type = multipart([("key", key), *self.fields], data)
        response = _pool().request("POST", self.url, body=body, headers={"Content-Type": content_type})
        if response.status >= 300:
            raise OSError(f"uploading {key} answered HTTP {response.status}: {response.data[:300]!r}")

    def put(self, clean: CleanFile) -> FileEntry:
        data = clean.data
        digest = content_digest(data)
        self.upload(f"{self.prefix}objects/{digest.removeprefix('sha256:')}", data)
        return file_entry(clean, digest)


# Kept-alive connections, one pool per process (a forked worker makes its own). A connection per request
# (urllib's), with its DNS lookup through the pod's search domains, held a shard pod under 9 files/s where
# the in-process ingest, whose S3 client keeps its connections, did 195 (bench/ingest_shards.py).
_POOLS: dict[str, urllib3.PoolManager] = {}
os.register_at_fork(after_in_child=_POOLS.clear)


def _pool() -> urllib3.PoolManager:
    pool = _POOLS.get("pool")
    if pool is None:
        timeout = urllib3.Timeout(connect=30, read=120)
        pool = _POOLS["pool"] = urllib3.PoolManager(maxsize=4, retries=False, timeout=timeout)
    return pool


def _fetch_json(url: str, first: bool = False) -> dict[str, Any]:
    if first:
        # The pod's NetworkPolicy may not be programmed yet (`_clients.first_contact`).
        body = read_first(https_opener(), url)
    else:
        response = _pool().request("GET", url)
        if response.status != 200:
            raise OSError(f"reading the shard's plan answered HTTP {response.status}")
        body = response.data
    document: dict[str, Any] = json.loads(body)
    return document


def _stored(url: str) -> bool:
    response = _pool().request("GET", url)
    if response.status in (200, 404):
        return response.status == 200
    raise OSError(f"looking for the shard's result answered HTTP {response.status}")


def deid_config(run_plan: dict[str, Any], key: bytes, table_json: str | None) -> DeidConfig:
    """The run's de-identification from its plan, with the key of its Secret, which must be the plan's."""
    keyring = Keyring(key)
    if keyring.key_id != run_plan["keyId"]:
        raise ShardRefused(
            f"the key in the run's Secret ({keyring.key_id}) is not the run's ({run_plan['keyId']}); "
            "its pseudonyms would not join the other shards'"
        )
    # The operator parsed the site's table (``datasets.pseudonym_table``) and wrote it as JSON.
    table = json.loads(table_json or "{}") if run_plan["pseudonymTable"] else None
    return DeidConfig(
        DeidentificationMethod(run_plan["method"]),
        keyring,
        frozenset(DeidentificationOption(o) for o in run_plan["options"]),
        BurnedInAnnotationPolicy(run_plan["burnedInAnnotations"]),
        table,
    )


def shard_document(index: int, result: IngestResult) -> dict[str, Any]:
    """A shard's result: its kept files (as the manifest needs them) and where each came from, and the
    entries it quarantined."""
    return {
        "index": index,
        "files": [entry_to_json(entry) for entry in sorted(result.files, key=lambda e: e.path)],
        "origins": dict(sorted(result.origins.items())),
        "quarantined": [q.to_json() for q in sorted(result.quarantined, key=lambda q: q.item)],
        "failed": [],
    }


def run_shard(env: dict[str, str], index: int, workers: int) -> str:
    """Do shard ``index`` of the run ``env`` grants; say what was done (the pod's last log line)."""
    run_plan = _fetch_json(env[INGEST_GRANT_VARIABLE], first=True)
    shard = run_plan["shards"][index]
    if _stored(shard["result"]):
        return f"shard {index}: its result is stored already; nothing to do"
    config = deid_config(run_plan, base64.b64decode(env[INGEST_KEY_VARIABLE]), env.get(INGEST_TABLE_VARIABLE))
    plan = _fetch_json(shard["plan"])
    upload = run_plan["upload"]
    sink = PostSink(upload["url"], upload["prefix"], tuple(upload["fields"].items()))
    reader = UrlReader(tuple((item, url) for item, url in plan["items"]))
    cap = int(run_plan["maxFileBytes"])
    result = run(reader, reader.items(), config, sink, workers=workers, limits=Limits(cap, cap))
    outage = result.outage
    if outage is not None:
        raise ShardRefused(
            f"shard {index} stopped at an outage: {outage.item}: {outage.reason}: {outage.detail}"
        )
    document = json.dumps(shard_document(index, result), sort_keys=True).encode()
    sink.upload(f"{upload['prefix']}shards/{index}.json", document)
    return f"shard {index}: {len(result.files)} files kept, {len(result.quarantined)} quarantined"


def main(workers: int = 1) -> int:
    """`cleanroom ingest-shard --workers N`: the Indexed Job's pod (N from its CPU limit: a container sees
    the node's cores, not its share)."""
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    try:
        print(run_shard(dict(os.environ), index, max(1, workers)), flush=True)
    except Exception as error:
        message = f"shard {index} failed: {type(error).__name__}: {error}"
        print(message, file=sys.stderr, flush=True)
        try:
            with open("/dev/termination-log", "w") as log:
                log.write(message[:4000])
        except OSError:
            pass
        return 1
    return 0
