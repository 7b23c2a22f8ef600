"""Readers of raw DICOM: a directory, an S3 prefix, a DICOMweb server, another Dataset's snapshot.

Each reader is a small picklable value (so ingest worker processes can rebuild it) with ``items()`` to
list what to read, ``read(item)`` to fetch one file's bytes, and ``describe()`` for the manifest.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from cleanroom.snapshots import S3Location, SnapshotStore, s3_client


class SourceError(RuntimeError):
    """The source cannot be listed or read; the message says what to check."""


class SourceReader(Protocol):
    def items(self) -> list[str]: ...
    def read(self, item: str) -> bytes: ...
    def describe(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class DirectoryReader:
    path: str

    def items(self) -> list[str]:
        root = Path(self.path)
        if not root.is_dir():
            raise SourceError(f"source directory {self.path} does not exist or is not a directory")
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def read(self, item: str) -> bytes:
        return (Path(self.path) / item).read_bytes()

    def describe(self) -> dict[str, str]:
        return {"kind": "directory", "location": self.path}


@dataclass(frozen=True)
class S3Reader:
    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    def _client(self) -> Any:
        return s3_client(self.endpoint, self.access_key, self.secret_key, self.region)

    def items(self) -> list[str]:
        try:
            client = self._client()
            if not client.bucket_exists(self.bucket):
                raise SourceError(f"bucket {self.bucket!r} does not exist at {self.endpoint}")
            objects = client.list_objects(self.bucket, prefix=self.prefix, recursive=True)
            return sorted(str(o.object_name) for o in objects if not o.is_dir)
        except SourceError:
            raise
        except Exception as error:
            raise SourceError(
                f"cannot list s3://{self.bucket}/{self.prefix} at {self.endpoint}: {error}"
            ) from error

    def read(self, item: str) -> bytes:
        response = self._client().get_object(self.bucket, item)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def describe(self) -> dict[str, str]:
        return {"kind": "s3", "location": f"s3://{self.bucket}/{self.prefix}", "endpoint": self.endpoint}


@dataclass(frozen=True)
class SnapshotReader:
    """Another Dataset's published snapshot (the CHAIMELEON two-step: pseudonymize at the site, then derive)."""

    store: S3Location
    dataset: str
    snapshot: str

    def _manifest(self) -> dict[str, Any]:
        return SnapshotStore(self.store).manifest(self.dataset, self.snapshot)

    def items(self) -> list[str]:
        return [f"{entry['digest']} {entry['path']}" for entry in self._manifest()["files"]]

    def read(self, item: str) -> bytes:
        digest = item.split(" ", 1)[0]
        data = SnapshotStore(self.store).get_object(digest)
        if data is None:
            raise SourceError(f"object {digest} of snapshot {self.snapshot} is missing")
        return data

    def describe(self) -> dict[str, str]:
        return {"kind": "dataset", "location": f"dataset/{self.dataset}@{self.snapshot}"}


@dataclass(frozen=True)
class DicomWebReader:
    """QIDO-RS to list instances, WADO-RS to fetch each one (PS3.18)."""

    url: str
    study_instance_uids: tuple[str, ...] = ()
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    ca_bundle: str = ""

    def _open(self, path: str, accept: str) -> Any:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers={"Accept": accept})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        elif self.username:
            import base64

            pair = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        context = ssl.create_default_context(cafile=self.ca_bundle or None)
        return urllib.request.urlopen(request, timeout=60, context=context)

    def _qido(self, path: str) -> list[dict[str, Any]]:
        try:
            with self._open(path, "application/dicom+json") as response:
                body = response.read()
        except Exception as error:
            raise SourceError(f"QIDO-RS {self.url}{path} failed: {error}") from error
        found: list[dict[str, Any]] = json.loads(body) if body.strip() else []
        return found

    @staticmethod
    def _uid(record: dict[str, Any], tag: str) -> str:
        return str(record[tag]["Value"][0])

    def items(self) -> list[str]:
        studies = list(self.study_instance_uids) or [
            self._uid(s, "0020000D") for s in self._qido("/studies?includefield=0020000D")
        ]
        found = []
        for study in studies:
            for instance in self._qido(f"/studies/{quote(study)}/instances"):
                found.append(f"{study}/{self._uid(instance, '0020000E')}/{self._uid(instance, '00080018')}")
        return sorted(found)

    def read(self, item: str) -> bytes:
        study, series, instance = item.split("/")
        path = f"/studies/{quote(study)}/series/{quote(series)}/instances/{quote(instance)}"
        with self._open(path, 'multipart/related; type="application/dicom"') as response:
            content_type = response.headers.get("Content-Type", "")
            body = response.read()
        parts = list(_multipart_parts(content_type, body))
        if len(parts) != 1:
            raise SourceError(f"WADO-RS {path} returned {len(parts)} parts, expected 1")
        return parts[0]

    def describe(self) -> dict[str, str]:
        return {"kind": "dicomweb", "location": self.url}


def _multipart_parts(content_type: str, body: bytes) -> Iterator[bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if payload:
            yield bytes(payload)
