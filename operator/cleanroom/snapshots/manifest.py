"""Snapshot manifests: a pure, canonical description of a published snapshot.

The manifest lists every instance (path by patient/study/series/instance, sha256, size), the counts and
modalities for a catalogue, and how the data was de-identified (profile, method, options, key id, tool).
Its canonical JSON bytes are what is stored, and their sha256 is the snapshot's id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cleanroom import __version__

PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"


@dataclass(frozen=True)
class FileEntry:
    path: str
    digest: str
    size: int
    patient: str
    study: str
    series: str
    modality: str = ""
    body_part: str = ""
    # (attribute, identifier) for each identifier of the original header cleaned out of a value: where it
    # was found and which original attribute it came from (never the identifier itself).
    cleaned: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry: path, digest, size, and what was cleaned when anything was."""
        entry: dict[str, Any] = {"path": self.path, "digest": self.digest, "size": self.size}
        if self.cleaned:
            entry["cleaned"] = [{"attribute": a, "identifier": i} for a, i in self.cleaned]
        return entry


def content_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Tally:
    """What a manifest counts, added up one kept file at a time (so that a manifest written as a stream
    counts exactly as one built whole): its memory grows with the distinct patients, studies and series,
    not with the files."""

    files: int = 0
    bytes: int = 0
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    modalities: set[str] = field(default_factory=set)
    body_parts: set[str] = field(default_factory=set)

    def add(self, entry: FileEntry) -> None:
        self.files += 1
        self.bytes += entry.size
        self.patients.add(entry.patient)
        self.studies.add(entry.study)
        self.series.add(entry.series)
        if entry.modality:
            self.modalities.add(entry.modality)
        if entry.body_part:
            self.body_parts.add(entry.body_part)


def _document(
    *,
    dataset: str,
    tally: Tally,
    files: list[dict[str, Any]],
    source: Mapping[str, str],
    method: str,
    options: Iterable[str],
    key_id: str,
    quarantine: Mapping[str, Any],
    created_at: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "SnapshotManifest",
        "dataset": dataset,
        "createdAt": created_at,
        "tool": {"name": "cleanroom", "version": __version__},
        "source": dict(source),
        "deidentification": {
            "profile": PROFILE,
            "method": method,
            "options": sorted(options),
            "keyId": key_id,
        },
        "counts": {
            "files": tally.files,
            "bytes": tally.bytes,
            "patients": len(tally.patients),
            "studies": len(tally.studies),
            "series": len(tally.series),
        },
        "modalities": sorted(tally.modalities),
        "bodyParts": sorted(tally.body_parts),
        "quarantine": dict(quarantine),
        "files": files,
    }


def build_manifest(*, files: Iterable[FileEntry], **description: Any) -> dict[str, Any]:
    """The manifest document. Files are sorted by path so that the same content gives the same bytes.
    ``description``: dataset, source, method, options, key_id, quarantine, created_at."""
    entries = sorted(files, key=lambda f: f.path)
    tally = Tally()
    for entry in entries:
        tally.add(entry)
    return _document(tally=tally, files=[f.to_json() for f in entries], **description)


def manifest_frame(tally: Tally, extra: Mapping[str, Any], **description: Any) -> tuple[bytes, bytes]:
    """The canonical bytes of a manifest before and after its files' list, for a writer that streams the
    list between them (each entry ``canonical_json(entry.to_json())``, comma-separated, in path order): the
    whole is byte for byte ``canonical_json`` of the manifest ``build_manifest`` gives for the same files
    (``extra``: top-level fields added to it, as the ingest's ``origin``)."""
    marker = "files-" + hashlib.sha256(repr(sorted(description.items())).encode()).hexdigest()
    document = {**_document(tally=tally, files=[marker], **description), **extra}  # type: ignore[list-item]
    before, found, after = canonical_json(document).partition(f'"files":["{marker}"]'.encode())
    if not found:
        raise ValueError("the manifest's files list was not found in its frame")
    return before + b'"files":', after


@dataclass(frozen=True)
class Mismatch:
    path: str
    problem: str


def check_object(path: str, expected_digest: str, expected_size: int, data: bytes | None) -> Mismatch | None:
    """Whether one stored object matches its manifest entry."""
    if data is None:
        return Mismatch(path, "missing from the object store")
    if len(data) != expected_size:
        return Mismatch(path, f"size {len(data)} != manifest {expected_size}")
    actual = content_digest(data)
    if actual != expected_digest:
        return Mismatch(path, f"digest {actual} != manifest {expected_digest}")
    return None


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def summary(manifest: Mapping[str, Any], digest: str) -> dict[str, Any]:
    """The Dataset.status.snapshot view of a manifest."""
    counts = manifest["counts"]
    return {
        "digest": digest,
        "shortDigest": short_digest(digest),
        "files": counts["files"],
        "bytes": counts["bytes"],
        "patients": counts["patients"],
        "studies": counts["studies"],
        "series": counts["series"],
        "modalities": list(manifest["modalities"]),
        "createdAt": manifest["createdAt"],
    }
