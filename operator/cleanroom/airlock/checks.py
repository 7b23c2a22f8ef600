"""The automated disclosure checks on an export: pure functions from the exported files, the snapshot's
fingerprints and the Dataset's export policy to a machine-readable result per check (SATRE 3.3.09).

- NoDicom: no file, and nothing inside one (zip members, a gzip payload, tensor storages, byte arrays),
  has DICOM's magic at offset 128 (PS3.10 7.1) or parses as a DICOM data set (pydicom, for files written
  without the preamble).
- NoSnapshotData: no file or inner buffer whose sha256 is an object of the snapshot or the bytes of one of
  its frames (also cut into frame-sized pieces: a stack of slices), and no array with a 2-D plane (in any
  axis, transposed too) whose values equal a frame's (any dtype, modality LUT or not) or whose difference
  hash, in any orientation, is within `perceptual.MATCH_DISTANCE` of a frame's (downscaled, re-encoded,
  windowed, turned or mirrored).
- NoIdentifiers: no pseudonym, UID, accession or study number of the snapshot in the file's bytes, its
  inner buffers or its string arrays.
- ExportPolicy: the Dataset's spec.export: total size and the types allowed, judged by content.

Each check fails closed: a file it could not inspect is a finding. What no check can catch (pixels
permuted or encrypted by the modeller, a model that memorised a scan) is why two people approve.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cleanroom.airlock.arrays import DEFAULT_INFLATE_LIMIT, AnyArray, Contents, decode
from cleanroom.airlock.filetypes import DICOM, UNKNOWN, Kind, has_dicom_magic, sniff
from cleanroom.airlock.fingerprints import SnapshotFingerprints
from cleanroom.airlock.perceptual import (
    HASH_BITS,
    MATCH_DISTANCE,
    MIN_SIDE,
    difference_hashes,
    distances,
    value_hash,
)
from cleanroom.api import ExportPolicy

NO_DICOM = "NoDicom"
NO_SNAPSHOT_DATA = "NoSnapshotData"
NO_IDENTIFIERS = "NoIdentifiers"
EXPORT_POLICY = "ExportPolicy"
CHECKS = (NO_DICOM, NO_SNAPSHOT_DATA, NO_IDENTIFIERS, EXPORT_POLICY)
# Beyond these an array, or a buffer cut into frames, is not inspected in full: a finding (fail closed).
MAX_PLANES_PER_FILE = 20_000
MAX_FRAMES_PER_BUFFER = 4096
# DICOM parsing of inner buffers is the slow part; a file with more is judged on its first ones only.
MAX_PARSED_BUFFERS = 256
_UID = re.compile(rb"[0-9]+(?:\.[0-9]+)+")
_WORD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9]")


@dataclass(frozen=True)
class ExportedFile:
    path: str
    data: bytes


@dataclass(frozen=True)
class Finding:
    file: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "detail": self.detail}


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    looked_at: tuple[str, ...]
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "lookedAt": list(self.looked_at),
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class _Inspected:
    """One file, sniffed and decoded once for every check."""

    file: ExportedFile
    kind: Kind
    contents: Contents


def run_checks(
    files: Sequence[ExportedFile],
    fingerprints: SnapshotFingerprints,
    policy: ExportPolicy,
    inflate_limit: int = DEFAULT_INFLATE_LIMIT,
) -> tuple[CheckResult, ...]:
    """Every check on ``files``; ``inflate_limit`` bounds what one file may decompress or decode to."""
    inspected = [_inspect(f, inflate_limit) for f in files]
    return (
        check_no_dicom(inspected),
        check_no_snapshot_data(inspected, fingerprints),
        check_no_identifiers(inspected, fingerprints),
        check_export_policy(inspected, policy),
    )


def passed(results: Sequence[CheckResult]) -> bool:
    return all(r.passed for r in results)


def _inspect(file: ExportedFile, inflate_limit: int) -> _Inspected:
    kind = sniff(file.data, file.path)
    contents = Contents() if kind in (DICOM, UNKNOWN) else decode(file.data, kind, inflate_limit)
    return _Inspected(file, kind, contents)


def _result(name: str, looked_at: list[str], findings: list[Finding]) -> CheckResult:
    return CheckResult(name, not findings, tuple(looked_at), tuple(findings))


# -- NoDicom ---------------------------------------------------------------------------------------------------


def check_no_dicom(inspected: Sequence[_Inspected]) -> CheckResult:
    looked_at, findings = [], []
    for item in inspected:
        path = item.file.path
        buffers = [("the file", item.file.data)] + [
            (f"member {name!r}", data) for name, data in item.contents.buffers
        ]
        buffers += [
            (f"array {name!r}", array.tobytes())
            for name, array in item.contents.arrays
            if array.dtype.itemsize == 1 and array.size > 132
        ]
        looked_at.append(
            f"{path}: {len(buffers)} byte stream{'s' if len(buffers) != 1 else ''} for the DICM magic at 128 "
            "and a DICOM parse"
        )
        for index, (what, data) in enumerate(buffers):
            if has_dicom_magic(data):
                findings.append(Finding(path, f"{what} is DICOM (DICM magic at offset 128)"))
            elif index < MAX_PARSED_BUFFERS and _parses_as_dicom(data):
                findings.append(Finding(path, f"{what} parses as a DICOM data set (no preamble)"))
    return _result(NO_DICOM, looked_at, findings)


def _parses_as_dicom(data: bytes) -> bool:
    """Whether bytes without the preamble are a DICOM data set: pydicom reads them and finds what every
    image object has (SOP Class UID, patient ID or pixel data). Arbitrary bytes read by force give
    nonsense tags, never these."""
    if len(data) < 16:
        return False
    import pydicom

    try:
        with warnings.catch_warnings():
            # pydicom warns about what it guesses in bytes read by force: expected here, not news.
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
            found = {k for k in ("SOPClassUID", "PatientID", "PixelData", "StudyInstanceUID") if k in dataset}
    except Exception:
        return False
    return len(found) >= 2


# -- NoSnapshotData --------------------------------------------------------------------------------------------


def check_no_snapshot_data(
    inspected: Sequence[_Inspected], fingerprints: SnapshotFingerprints
) -> CheckResult:
    looked_at, findings = [], []
    for item in inspected:
        path = item.file.path
        found: list[str] = []
        planes = 0
        found += _bytes_matches("the file", item.file.data, fingerprints)
        for name, data in item.contents.buffers:
            found += _bytes_matches(f"member {name!r}", data, fingerprints)
        for name, array in item.contents.arrays:
            found += _bytes_matches(f"array {name!r}", np.ascontiguousarray(array).tobytes(), fingerprints)
            for label, plane in _planes(name, array):
                planes += 1
                if planes > MAX_PLANES_PER_FILE:
                    found.append(f"more than {MAX_PLANES_PER_FILE} image planes: not inspected in full")
                    break
                found += _plane_matches(label, plane, fingerprints)
        found += [f"could not be inspected: {problem}" for problem in item.contents.problems]
        looked_at.append(
            f"{path} as {item.kind} ({item.contents.describe()}, {planes} image plane"
            f"{'s' if planes != 1 else ''}) against {len(fingerprints.objects)} objects and "
            f"{len(fingerprints.difference_hashes)} frames of the snapshot"
        )
        findings += [Finding(path, detail) for detail in dict.fromkeys(found)]
    return _result(NO_SNAPSHOT_DATA, looked_at, findings)


def _bytes_matches(what: str, data: bytes, fingerprints: SnapshotFingerprints) -> list[str]:
    digest = hashlib.sha256(data).hexdigest()
    if f"sha256:{digest}" in fingerprints.objects:
        return [f"{what} is the snapshot object {fingerprints.objects[f'sha256:{digest}']}"]
    if digest in fingerprints.frame_bytes:
        return [f"{what} is the pixel data of {fingerprints.frame_bytes[digest]}"]
    found = []
    for size in fingerprints.frame_sizes:
        count = len(data) // size if size else 0
        if count < 2 or len(data) % size or count > MAX_FRAMES_PER_BUFFER:
            continue
        for index in range(count):
            chunk = hashlib.sha256(data[index * size : (index + 1) * size]).hexdigest()
            if chunk in fingerprints.frame_bytes:
                found.append(
                    f"{what} holds the pixel data of {fingerprints.frame_bytes[chunk]} (frame {index})"
                )
                break
    return found


def _planes(name: str, array: AnyArray) -> Iterator[tuple[str, AnyArray]]:
    """Every 2-D plane of an array large enough to be an image: the array itself (grey, or colour H x W x 3),
    and its slices along each axis."""
    if array.dtype.kind not in "biuf" or array.ndim < 2:
        return
    if array.ndim == 3 and array.shape[2] in (3, 4):
        yield f"array {name!r}", array
    if array.ndim == 2:
        stacks = [array[None]]
    else:
        flat = array.reshape((-1, *array.shape[-3:])) if array.ndim > 3 else array[None]
        stacks = [np.moveaxis(volume, axis, 0) for volume in flat for axis in range(3)]
    for stack in stacks:
        if min(stack.shape[1:]) < MIN_SIDE:
            continue
        for index in range(stack.shape[0]):
            yield f"array {name!r} plane {index}", stack[index]


def _plane_matches(label: str, plane: AnyArray, fingerprints: SnapshotFingerprints) -> list[str]:
    """Exact values (as stored, or transposed: NIfTI and many tools store x before y), then the difference
    hash in every orientation."""
    for candidate in (plane, plane.T):
        exact = value_hash(candidate)
        if exact in fingerprints.frame_values:
            return [f"{label} has the pixel values of {fingerprints.frame_values[exact]}"]
    if not fingerprints.difference_hashes:
        return []
    for hashed in difference_hashes(plane):
        near = distances(hashed, fingerprints.hash_matrix)
        best = int(near.argmin())
        if near[best] <= MATCH_DISTANCE:
            source = fingerprints.difference_hashes[best][1]
            return [
                f"{label} looks like a frame of {source} (difference hash {int(near[best])} of "
                f"{HASH_BITS} bits apart): a downscaled, re-encoded or turned slice"
            ]
    return []


# -- NoIdentifiers ---------------------------------------------------------------------------------------------


def check_no_identifiers(inspected: Sequence[_Inspected], fingerprints: SnapshotFingerprints) -> CheckResult:
    looked_at, findings = [], []
    known = fingerprints.identifiers
    for item in inspected:
        streams = [item.file.data] + [data for _, data in item.contents.buffers]
        streams += [
            "\n".join(str(v) for v in array.ravel()).encode()
            for _, array in item.contents.arrays
            if array.dtype.kind in "US"
        ]
        tokens = set()
        for stream in streams:
            tokens.update(_UID.findall(stream))
            tokens.update(_WORD.findall(stream))
        looked_at.append(
            f"{item.file.path}: {len(tokens)} distinct tokens against {len(known)} identifiers of the snapshot"
        )
        hits = sorted({t.decode("ascii", "replace") for t in tokens} & set(known))
        findings += [Finding(item.file.path, f"holds {value!r}, the {known[value]}") for value in hits]
    return _result(NO_IDENTIFIERS, looked_at, findings)


# -- ExportPolicy ----------------------------------------------------------------------------------------------


def check_export_policy(inspected: Sequence[_Inspected], policy: ExportPolicy) -> CheckResult:
    allowed = set(policy.allowed_types)
    total = sum(len(item.file.data) for item in inspected)
    looked_at = [
        f"{item.file.path}: {len(item.file.data)} bytes, {item.kind} by content" for item in inspected
    ] + [
        f"{total} bytes in all, against the limit of {policy.max_bytes}; "
        f"allowed types: {', '.join(sorted(allowed)) or 'none'}"
    ]
    findings = []
    if total > policy.max_bytes:
        findings.append(
            Finding("", f"{total} bytes in all is over the Dataset's limit of {policy.max_bytes}")
        )
    for item in inspected:
        if item.kind == UNKNOWN:
            findings.append(
                Finding(item.file.path, "its type is not one that can be checked, so it cannot leave")
            )
        elif item.kind not in allowed:
            findings.append(
                Finding(item.file.path, f"{item.kind} is not a type the Dataset's export policy allows")
            )
    return _result(EXPORT_POLICY, looked_at, findings)
