"""Readers of raw DICOM: a directory, an S3 prefix, a DICOMweb server (another Dataset's snapshot is read by
`ingest.SnapshotReader`, which joins this protocol with the snapshot store).

Each reader is a small picklable value (so ingest worker processes can rebuild it) with ``items()`` to
list what to read, ``skipped()`` for entries of the source that are not files to read (with the reason),
``read(item, limit)`` to fetch one file's bytes, and ``describe()`` for the manifest.

A failed read is the source's failure, never the file's: it raises (the ingest stops and publishes
nothing). Only ``TooLarge`` is a property of the file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from cleanroom._clients.s3 import s3_client

# HTTP, TLS and MIME parsing (DICOMweb) are imported by the reader that uses them: `cleanroom deid` lists and
# reads a directory, and each module it imports is start-up time a user waits for.


class SourceError(RuntimeError):
    """The source cannot be listed or read; the message says what to check."""


class ListingOutOfOrder(SourceError):
    """A store listed its keys out of the order S3 promises: the caller sorts the whole listing instead."""


# What one file may have, by default: a worker holds a file, its parsed copy and its output at once.
DEFAULT_MAX_FILE_BYTES = 1 << 30


class TooLarge(Exception):
    """A file larger than the ingest may hold in memory at once; it is quarantined, never read whole."""

    def __init__(self, item: str, size: int | None, limit: int) -> None:
        has = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(
            f"the file has {has}; one file may have at most {limit} (CLEANROOM_INGEST_MAX_FILE_BYTES)"
        )
        self.item = item
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class Skipped:
    """An entry of the source that is not a file to read, and why."""

    item: str
    reason: str
    detail: str


class SourceReader(Protocol):
    def items(self) -> list[str]: ...
    def skipped(self) -> list[Skipped]: ...
    def read(self, item: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes: ...
    def describe(self) -> dict[str, str]: ...


def read_at_most(stream: Any, item: str, limit: int, size: int | None = None) -> bytes:
    """Read ``stream`` to its end, but never more than ``limit`` bytes (then TooLarge). ``size`` is what the
    stream says it holds, when it says: read in one piece (a read of n bytes allocates n bytes at once, so an
    unknown size is read a megabyte at a time rather than with a read of ``limit``)."""
    if size is not None and size > limit:
        raise TooLarge(item, size, limit)
    parts: list[bytes] = []
    total = 0
    while True:
        want = size - total if size is not None and total < size else min(1 << 20, limit + 1 - total)
        part = bytes(stream.read(max(want, 1)))
        if not part:
            return b"".join(parts) if len(parts) != 1 else parts[0]
        parts.append(part)
        total += len(part)
        if total > limit:
            raise TooLarge(item, None, limit)


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe): reading it would wait for a writer"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True)
class _Listing:
    files: list[str]
    skipped: list[Skipped]


def list_directory(root: Path) -> _Listing:
    """Every entry under ``root``: the regular files to read (symbolic links to files included), and every
    other entry with its reason. Links to directories are not followed (one could lead back up and loop).
    A directory that cannot be listed is the source's failure (SourceError)."""
    files: list[str] = []
    skipped: list[Skipped] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            raise SourceError(f"cannot list {directory}: {error.strerror or error}") from error
        if not entries and directory != root:
            skipped.append(
                Skipped(str(directory.relative_to(root)) + "/", "EmptyDirectory", "no files in it")
            )
        for entry in entries:
            path = Path(entry.path)
            name = str(path.relative_to(root))
            if entry.is_symlink():
                found = _link_entry(path, name, root)
                if isinstance(found, Skipped):
                    skipped.append(found)
                else:
                    files.append(name)
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                pending.append(path)
            elif stat.S_ISREG(mode):
                files.append(name)
            else:
                skipped.append(Skipped(name, "NotARegularFile", _special(mode)))
    return _Listing(sorted(files), sorted(skipped, key=lambda s: s.item))


def _special(mode: int) -> str:
    return next((what for test, what in _SPECIAL_FILES if test(mode)), "not a regular file")


def _link_entry(path: Path, name: str, root: Path) -> Skipped | None:
    """None for a link to a regular file (it is read); otherwise why the link is skipped."""
    target = os.readlink(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return Skipped(name, "SymlinkLoop", f"the link {target!r} leads round in a loop")
        return Skipped(name, "DanglingLink", f"the link points to {target!r}, which does not exist")
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        resolved = path.resolve()
        if resolved == path.parent.resolve() or resolved in path.parent.resolve().parents:
            return Skipped(name, "SymlinkLoop", f"the link {target!r} leads back to a directory above it")
        return Skipped(
            name,
            "LinkToDirectory",
            f"the link to the directory {target!r} is not followed; copy the files in",
        )
    return Skipped(name, "NotARegularFile", f"the link points to {_special(mode)}")


@dataclass(frozen=True)
class _Descriptor:
    """An open file descriptor read as a stream (``read_at_most`` reads one)."""

    number: int

    def read(self, size: int) -> bytes:
        return os.read(self.number, size)


@dataclass(frozen=True)
class DirectoryReader:
    path: str

    def _listing(self) -> _Listing:
        root = Path(self.path)
        if not root.is_dir():
            raise SourceError(f"source directory {self.path} does not exist or is not a directory")
        return list_directory(root)

    def items(self) -> list[str]:
        return self._listing().files

    def skipped(self) -> list[Skipped]:
        return self._listing().skipped

    def walk(self) -> tuple[list[str], list[Skipped]]:
        """``items()`` and ``skipped()`` from one walk of the tree (each alone walks it again)."""
        listing = self._listing()
        return listing.files, listing.skipped

    def read(self, item: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        # O_NONBLOCK: should the entry have become a FIFO since it was listed, opening it does not wait.
        # Read with the descriptor itself: a buffered file object around it cost more than the read.
        descriptor = os.open(os.path.join(self.path, item), os.O_RDONLY | os.O_NONBLOCK)
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise SourceError(f"{item} is no longer a regular file")
            return read_at_most(_Descriptor(descriptor), item, limit, status.st_size)
        finally:
            os.close(descriptor)

    def describe(self) -> dict[str, str]:
        return {"kind": "directory", "location": self.path}


# S3 clients of this process, by endpoint, keys and region (see S3Reader._client). A forked worker starts
# without them: its parent's client holds an open connection, and two processes reading answers from one
# socket get each other's bytes.
_S3_CLIENTS: dict[tuple[str, str, str, str], Any] = {}
os.register_at_fork(after_in_child=_S3_CLIENTS.clear)


@dataclass(frozen=True)
class S3Reader:
    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)

    def _client(self) -> Any:
        """One client per reader and process: a client opens its own connection pool and, without a region,
        asks the server for the bucket's region before its first request, so one made per file doubled the
        requests and kept no connection."""
        key = (self.endpoint, self.access_key, self.secret_key, self.region)
        client = _S3_CLIENTS.get(key)
        if client is None:
            client = _S3_CLIENTS[key] = s3_client(
                self.endpoint, self.access_key, self.secret_key, self.region
            )
        return client

    def items(self) -> list[str]:
        return sorted(self._keys())

    def listing(self) -> Iterator[str]:
        """``items()`` without holding them: the keys in the store's own order, a page of the listing at a
        time (planning a Job ingest of millions of files). S3 lists keys in ascending UTF-8 byte order, which is
        the order of the decoded strings; ListingOutOfOrder as soon as a store does not keep it."""
        previous = None
        for key in self._keys():
            if previous is not None and key <= previous:
                raise ListingOutOfOrder(
                    f"s3://{self.bucket}/{self.prefix} at {self.endpoint} listed {key!r} after {previous!r}"
                )
            previous = key
            yield key

    def _keys(self) -> Iterator[str]:
        try:
            client = self._client()
            if not client.bucket_exists(self.bucket):
                raise SourceError(f"bucket {self.bucket!r} does not exist at {self.endpoint}")
            for found in client.list_objects(self.bucket, prefix=self.prefix, recursive=True):
                if not found.is_dir:
                    yield str(found.object_name)
        except SourceError:
            raise
        except Exception as error:
            raise SourceError(
                f"cannot list s3://{self.bucket}/{self.prefix} at {self.endpoint}: {error}"
            ) from error

    def skipped(self) -> list[Skipped]:
        return []

    def read(self, item: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        response = self._client().get_object(self.bucket, item)
        try:
            length = response.headers.get("Content-Length")
            return read_at_most(response, item, limit, int(length) if length else None)
        finally:
            response.close()
            response.release_conn()

    def describe(self) -> dict[str, str]:
        return {"kind": "s3", "location": f"s3://{self.bucket}/{self.prefix}", "endpoint": self.endpoint}


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
        import urllib.request

        from cleanroom._clients.tls import client_context

        request = urllib.request.Request(self.url.rstrip("/") + path, headers={"Accept": accept})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        elif self.username:
            import base64

            pair = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        return urllib.request.urlopen(request, timeout=60, context=client_context(self.ca_bundle))

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

    def skipped(self) -> list[Skipped]:
        return []

    def read(self, item: str, limit: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        study, series, instance = item.split("/")
        path = f"/studies/{quote(study)}/series/{quote(series)}/instances/{quote(instance)}"
        with self._open(path, 'multipart/related; type="application/dicom"') as response:
            content_type = response.headers.get("Content-Type", "")
            # The multipart envelope adds a few hundred bytes to the file.
            body = read_at_most(response, item, limit + 64 * 1024)
        parts = list(_multipart_parts(content_type, body))
        if len(parts) != 1:
            raise SourceError(f"WADO-RS {path} returned {len(parts)} parts, expected 1")
        return parts[0]

    def describe(self) -> dict[str, str]:
        return {"kind": "dicomweb", "location": self.url}


def _multipart_parts(content_type: str, body: bytes) -> Iterator[bytes]:
    import email.parser
    import email.policy

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if payload:
            yield bytes(payload)
